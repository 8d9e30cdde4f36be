"""The ``edgecl`` subcommands, one module each: ``add_<name>`` declares the flags,
``cmd_<name>`` runs the command. :mod:`edgecl.cli` assembles them."""
