from shipit.cli import console

console()
