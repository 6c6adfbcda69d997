from shipit.cli import main

main()
