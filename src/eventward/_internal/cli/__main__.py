from eventward._internal.cli import main

main()
