from varfx.cli import main

raise SystemExit(main())
