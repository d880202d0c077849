"""The verdict of every survivor (rules checked by reading the diffs), as docs/mutation-survivors.md:

    python benchmarks/mutation_survivors.py > s.txt && python benchmarks/mutation_verdicts.py s.txt > docs/mutation-survivors.md
"""
# ruff: noqa  (a rule table: long lines on purpose)
import re, sys, collections
blocks=[]; cur=None
for line in open(sys.argv[1]):
    if line.startswith("== "): cur=[line[3:].strip(), []]; blocks.append(cur)
    elif cur: cur[1].append(line.rstrip("\n").strip())
R = [  # (name regex, plus/minus regex, verdict, reason); first match wins
 # the sampled run of issue 18 (benchmarks/mutation_sample.py): structured, SFR-on, and the rest
 (r"structured\.x__entries__mutmut_10$|structured\.xǁFilterL1ǁprune__mutmut_40$|scrub\.xǁSCRUBǁtraining_step__mutmut_16$", r"", "pinned after the run", "test_a_residual_addition_couples_the_shortcut_and_the_second_conv, the rewind test at rewind none, SCRUB's exact steps with label smoothing 0.3 (each run on its mutant with MUTANT_UNDER_TEST in mutants/: fails)"),
 (r"structured\.x__graph__", r"verbose=True", "operational", "Torch-Pruning's tracing log"),
 (r"structured\.x_unsupported__mutmut_5$", r"", "equivalent", "recurse=None is falsy: recurse=False"),
 (r"structured\.x_unsupported__mutmut_18$", r"", "message", "the refusal's list of module names: any entry refuses"),
 (r"structured\.xǁFilterL1ǁvalidate", r"\.\.\.", "message", "error text"),
 (r"", r"softmax\([^()]*\([^()]*\)[^()]*, \)|softmax\(.*, dim=None\)|log_softmax\(student / t, \)", "equivalent", "softmax over the implicit dim: the class dim of 2-D logits"),
 (r"boundary\.xǁBoundaryExpandǁtraining_step__mutmut_18$", r"", "equivalent", "batch[2], the sample indices, has the labels' shape and dtype: the same tensor of shadow labels"),
 (r"layer_grads\.x__closed_form__mutmut_10$", r"", "equivalent", "per-sample gradients are taken in eval mode, and a BatchNorm has both running statistics or neither"),
 (r"rl\.xǁRandomLabelsǁ__init____mutmut_71$", r"", "equivalent", "the per-epoch labels are drawn again at the start of epoch 0"),
 (r"sfr_on\.x_fisher_ratio_mask__mutmut_5$", r"", "equivalent", "differs only where the forget Fisher is below 1e-15 (no forget gradient)"),
 (r"sfr_on\.xǁSFRonǁ_fisher__mutmut_27$", r"", "equivalent", "both Fishers scaled alike; only their ratio is used"),
 (r"sfr_on\.xǁSFRonǁ__init____mutmut_93$", r"", "message", "error text"),
 (r"base\..*on_train_batch_start", r"", "real, pinned outside the selection", "the step budget (an extra step / a return value Lightning does not stop on): tests/test_cost.py checks steps == max_steps end to end, outside the mutation subset"),
 (r"", r"super\(\).__init__\(net, task(, epochs=1, batch_size=batch_size, lr=1.0, seed=seed|, alpha=alpha, batch_size=batch_size|, batch_size=batch_size)?, (\*\*loop|\*\*one_shot|)\)", "message", "`node` dropped: its default is the same \"unlearner\", used only in messages"),
 (r"", r"ConfigError\(f|raise |\"[A-Z ,.'_()=\[\]]{8,}\"|_listed|log\.info|^\s*(None, |len\(dense\)|self\.m, )", "message", "error or log text"),
 (r"", r"torch\.zeros\(u\.shape\[0\], \)|torch\.full\(\(len\(data\.y\),\), [-+]\d|ones_like\(w, \)|zeros_like\(groups, \)", "equivalent", "dtype promoted or converted to bool later / rows never read keep any fill"),
 (r"", r"triggered\.loader\(triggered\.test, batch_size=batch_size, train=False, \)|^\s*\)$|torch\.load\(path, weights_only=True\)|Generator\(None\)|seed=self\.seed, \)|m\.to\(params\[k\]\.dtype\)", "CPU / dtype", "device, map_location or precision left at the default: the same on a CPU-only machine"),
 (r"", r"zip\(\*counts\.values\(\), \)|zip\(grads, g, \)", "operational", "zip strictness"),
 (r"published\.x_(_listed|read_checkpoint)", r"", "message", "error text"),
 (r"l1_sparse\..*__init____mutmut_6$", r"", "default", "a class keyword default; every config sets it (the default test compares signatures with the configs, and mutmut's trampolines keep the original signature)"),
 (r"l1_sparse\..*__init____mutmut_(26|36)$", r"", "message", "`node` dropped: its default is the same \"unlearner\", used only in messages"),
 (r"salun\..*on_load_checkpoint__mutmut_(3|5)$", r"", "equivalent", "every checkpoint SalUn writes holds the key"),
 (r"metrics\.unlearning\.x_evaluate__mutmut_(73|76)$", r"", "CPU / dtype", "the backdoor predictions' precision left at its default (32-true, the same)"),
 (r"base\.xǁUnlearnerǁ__init____mutmut_(15|27|28)$", r"", "message", "the budget check's message text"),
 (r"", r"einsum\(\"C,C", "equivalent", "einsum labels"),
 (r"iu\..*__init__", r"self\.counts", "equivalent", "reset at the epoch start"),
 (r"salun\..*on_train_start__mutmut_30$", r"", "pinned after the run", "the sparse saliency test sums 3 forget batches"),
 (r"", r"^DEF", "default", "a class keyword default; every config sets it (the default test compares signatures with the configs, and mutmut's trampolines keep the original signature)"),
 (r"unlearn\.rl\..*draw_labels__mutmut_(4|12|16|17)$", r"", "pinned after the run", "test_rl_per_epoch_labels_are_uniform_and_drawn_from_the_seed_and_epoch"),
 (r"unlearn\.rl\..*draw_labels__mutmut_(5|13)$", r"", "equivalent", "another seeded draw / randint(high) is randint(0, high)"),
 (r"n_m\.xǁNMPrunerǁprune__mutmut_(22|26)$", r"", "pinned after the run", "test_the_pruner_scores_the_trained_weights_and_rewinds now checks the mask and rewind none"),
 (r"salun\.x_saliency_mask__mutmut_22$", r"", "pinned after the run", "the sparse saliency test at ratio 0.8"),
 (r"salun\..*on_train_start__mutmut_32$", r"", "pinned after the run", "the sparse saliency test sums 3 forget batches"),
 (r"salun\..*on_after_backward__mutmut_(2|3)$", r"", "mutmut artefact", "the SalUn saliency tests fail with this mutant activated by hand (MUTANT_UNDER_TEST=... pytest, in mutants/); counted as survived"),
 (r"salun\..*on_after_backward__mutmut_1$", r"", "equivalent", "every parameter has a gradient after backward"),
 (r"metrics\.unlearning\.x_evaluate__mutmut_56$", r"", "pinned after the run", "test_evaluate_runs_one_attack_per_feature_and_privacy_on_the_first"),
 (r"at_init\.xǁGraSPǁscores__mutmut_7$", r"", "pinned after the run", "test_the_grasp_pruner_scores_at_its_own_temperature (the pruner's scores against w * (H g) by finite differences at temperatures 5 and 0.5; the tiny net's 50 % mask is the same at 5 and 200)"),
 (r"fisher\.xǁFisherForgettingBatchǁtraining_step__mutmut_(6|10)$", r"", "pinned after the run", "test_ff_batch_on_a_sparse_model_the_pruned_coordinates_have_no_gradient (ff_batch with a mask: pruned coordinates at the var cap in the mean over input channels, exact noise)"),
 (r"published\.xǁCheckpointǁ__post_init____mutmut_3$", r"", "real, pinned outside the selection", "NaN weights are refused in tests/test_bad_settings.py, not in the mutation subset"),
 (r"boundary\.xǁBoundaryShrinkǁ__init____mutmut_(36|49)$", r"view\(-1, 1, 1\)", "equivalent", "a (C, 1, 1) std or mean broadcasts over (B, C, H, W) images, and against the other (1, C, 1, 1) one, as (1, C, 1, 1) does (checked on RGB data by hand)"),
 (r"boundary\.xǁBoundaryShrinkǁ__init____mutmut_(3[6-9]|4[0-9]|5[0-9])$", r"view\(", "pinned after the run", "test_boundary_shrink_steps_each_rgb_channel_in_pixel_units_and_clips_to_valid_pixels (3-channel data with a mean and std per channel; the earlier tests ran on 1-channel digits)"),
 (r"boundary\.", r"nn\.Linear\(head\.in_features", "pinned after the run", "test_boundary_expand_trains_one_new_head_row_toward_the_shadow_class (heads with and without bias: one new row, a bias entry iff the head has biases; bias=None is falsy, no bias)"),
 (r"boundary\.", r"step / g\.sign", "equivalent", "g.sign() is +-1 wherever the gradient is non-zero"),
 (r"boundary\.", r"register_buffer", "operational", "whether the step/bounds are saved in the state dict; values unchanged"),
 (r"boundary\.", r"self\.bound = None|requires_grad_\(True\)|_features", "equivalent", "never read after __init__ / overwritten before use / the attacked copy's gradients are never used"),
 (r"base\.xǁUnlearnerǁsettings", r"", "real, not testable here", "settings() (metrics.json's hyperparameters) reads what save_hyperparameters collects from caller frames, which mutmut's trampolines change; its tests are outside the mutation subset"),
 (r"", r"^BOUNDARY", "validation boundary", "a check's edge moved (>= 0 vs > 0, >= 1 vs >= 2): the tests try values inside and outside the range, not on its edge (SNIP's samples_per_class = 1, GraSP's temperature 0.5, IU's samples = 1 and N:M's 1:2 were added after this run)"),
 (r"", r"XX|\bnode\b|\"unlearner\"|unlearner\.start|pruner\.|_listed|splitlines\(\)\[1\]|type\(None\)|round\(|str\(None\)\.split", "message", "error or log text: names, wording, rounding, `node` (used only in messages)"),
 (r"", r"^\s*None\)|check\(|ConfigError\(None|ValueError|log\.info|self\.log|log_loss", "message", "an argument of an error message or log call"),
 (r"", r"\"NAN\"", "equivalent", "float('NAN') is float('nan')"),
 (r"", r"weights_only=None|weights_only=True\)\)$|, \)\)$", "equivalent", "weights_only defaults to True in torch >= 2.6"),
 (r"", r"device|map_location|\.to\(None|dtype=None|dtype\), \)|, None\)\.items|precision|\"cuda\"|cuda", "CPU / dtype", "same device or dtype on a CPU-only machine, or the default dtype"),
 (r"", r"strict=|n_jobs|cpu_count|Parallel", "operational", "thread count or zip strictness"),
 (r"", r"set_to_none|chunk_size|memory_mb|sorted=|batch_size=None|batch_size: int = \d|automatic_optimization", "operational", "memory, speed or bookkeeping only"),
 (r"", r"keep=None|, None\)\.items\(\)|summed_grad\(self\.net, x, y, \)|keep=keep\):$|log_likelihood, \)|keep=self\.keep\(\)\)|, \):$", "equivalent", "the pruned coordinates it changes are masked afterwards, or the dropped argument is the default"),
 (r"", r"= None$|= 1$|= \"\"$|: Grads = None|= None  #|, 0, 1$|\] = None|dampened|self\.batches\[part\] \+= 2", "equivalent", "an initial value overwritten before use (epoch start / train start), or both counts scaled alike"),
 (r"", r"loss=log_likelihood|chunk_size=self\.chunk, keep=keep\)", "equivalent", "the default loss is the cross-entropy, minus log p: the same squared gradient"),
 (r"", r"g - EPS", "equivalent", "differs from (g + 1e-8)^2 by 4e-8 g: below float precision"),
 (r"", r"sums = None|sums is not None", "equivalent", "the vmap path computes the same F as the closed form (both tested)"),
 (r"", r"dim=\+1|sum\(\+1\)|argmax\(\+1\)|num_classes=None|multiclass_accuracy\(scores, labels, average", "equivalent", "the same for 2-D rows / micro accuracy does not depend on the class count"),
 (r"", r"num >= 0|clamp\(None|s >= 0|masked_fill\(~can, -2\.0\)|topk\(n, \)", "equivalent", "a term log(0) ranks below the floor 0 / indices are >= 0 by construction / a score of exactly 0 never occurs / any negative score / topk's default dim is -1"),
 (r"n_m\.", r"reshape|len\(shape\)|keep\.view", "equivalent", "for 2-D Linear and 4-D Conv2d weights the groups are the same m consecutive input weights"),
 (r"published\.", r"_to_ours\(k, None\)|_to_published\(k, None\)|head == PUBLISHED_HEAD and|str\(None\)", "equivalent", "the head is never masked / no other module is called fc / an empty path is no file either"),
 (r"pruners\.", r"magnitude_scores\(net, ", "equivalent", "pruned weights are exactly 0 after retraining and rank lowest anyway"),
 (r"synflow\.", r"", "CPU / dtype", "SynFlow's device and float64 choice: the same masks on CPU and on the test nets"),
 (r"", r"train=None|train=True|\"forget\", \)", "equivalent on the test data", "eval vs train transforms: digits has no augmentation (train=None is falsy: eval)"),
 (r"ssd\.", r"break", "equivalent", "the retain part comes first and is never exhausted before the forget part here"),
 (r"retrain\.", r"", "message", "validation text"),
 (r"mask\.", r"", "message", "error text"),
]
out=collections.defaultdict(list)
for name, lines in blocks:
    minus=[l[1:].strip() for l in lines if l.startswith("-")]; plus=[l[1:].strip() for l in lines if l.startswith("+")]
    text=" ".join(plus)
    if minus and minus[0].startswith("def "): text="DEF "+text
    mc=[re.split(r",", l.split("check(",1)[1])[0] for l in minus if "check(" in l]
    pc=[re.split(r",", l.split("check(",1)[1])[0] for l in plus if "check(" in l]
    if mc and pc and mc!=pc and re.search(r"[<>=]", " ".join(pc)): text="BOUNDARY "+text
    verdict=("unclassified","")
    for nr, tr, v, why in R:
        if (not nr or re.search(nr, name)) and (not tr or re.search(tr, text, re.M)):
            verdict=(v, why); break
    out[verdict].append((name, minus, plus))
tot=collections.Counter({k[0]:0 for k in out})
for (v,why),items in out.items(): tot[v]+=len(items)
print(dict(tot), file=sys.stderr)
mode = sys.argv[2] if len(sys.argv)>2 else "md"
if mode=="unclassified":
    for (v,why),items in out.items():
        if v in ("unclassified","see docs"):
            for n,m,p in items: print(n, "|", " ".join(p)[:140])
    sys.exit()
print("# Surviving mutants, each with its verdict\n")
print("Generated from `mutants/` by `benchmarks/mutation_survivors.py` (diffs) and sorted by verdict; see docs/testing.md for the run.\n")
for (v,why),items in sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1])):
    print(f"## {v}: {why} ({len(items)})\n")
    for n,m,p in items:
        print(f"- `{n.removeprefix('sparse_mu.')}`: `{(' '.join(p) or '(line removed)')[:160]}`")
    print()
