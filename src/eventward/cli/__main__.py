from eventward.cli import main

main()
