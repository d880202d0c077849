"""`python -m sparse_mu [group=option ...] [key=value ...]`: the `sparse-mu` command."""

from sparse_mu.cli import main

if __name__ == "__main__":
    main()
