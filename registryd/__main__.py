from registryd.tools.cli import main

raise SystemExit(main())
