from cosmogen.cli.main import main

main()
