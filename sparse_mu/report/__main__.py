from sparse_mu.report import main

main()
