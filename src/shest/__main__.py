from shest.cli.main import main

raise SystemExit(main())
