from jit_dispatch.cli.main import main

main()
