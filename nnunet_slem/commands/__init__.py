"""One module per ``nnunet-slem`` subcommand (see ``nnunet_slem.cli``)."""
