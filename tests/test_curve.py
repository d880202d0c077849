"""The learning-rate curve of the compare preset (sparse_mu/report/curve.py)."""

from sparse_mu.report.curve import main
from tests.test_report import _run


def test_the_curve_tabulates_and_plots_each_model_against_the_learning_rate(tmp_path, capsys):
    for i, (pruner, sparsity, lr, seed) in enumerate(
        (p, s, lr, seed) for p, s in (("dense", 0.0), ("omp", 95.0)) for lr in (0.03, 0.06) for seed in (0, 1)
    ):
        ua = 100.0 if (pruner == "omp" and lr == 0.06) else 0.0
        damaged = pruner == "omp" and lr == 0.06 and seed == 1
        _run(tmp_path, f"r{i}", pruner=pruner, sparsity=sparsity, seed=seed, ua=ua,
             config={"unlearner": {"lr": lr}},
             metrics={"disparity_avg": 50.0 - ua / 2 + seed, "cost_vs_retrain_steps": 0.1, "damaged": damaged})
    main([str(tmp_path)])
    text = capsys.readouterr().out
    assert "| unlearner.lr | dense Disparity Avg | dense RA | dense UA | omp 95% Disparity Avg |" in text
    assert "| 0.03 | 50.5 ± 0.7 | 99.0 ± 0.0 | 0.0 ± 0.0 | 50.5 ± 0.7 |" in text
    assert "| 0.06 | 50.5 ± 0.7 |" in text and "0.5 ± 0.7 | 99.0 ± 0.0 | 100.0 ± 0.0 | dense 0/2, omp 95% 1/2 |" in text
    assert "cost vs Retrain (steps) 0.100" in text
    for name in ("curve.md", "curve.csv", "curve.png", "curve.svg"):
        assert (tmp_path / name).stat().st_size > 0
