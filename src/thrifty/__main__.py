from thrifty.cli import main

main()
