"""`python run.py [group=option ...] [key=value ...]` from a clone: the same as the installed
`sparse-mu` command and `python -m sparse_mu` (sparse_mu/cli.py; see --help)."""

from sparse_mu.cli import main

if __name__ == "__main__":
    main()
