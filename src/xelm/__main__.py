from xelm.cli import main

main()
