"""The command line: one module per command family, each registering its parsers and running them
(``densepure COMMAND`` or ``python -m densepure COMMAND``). The only package that knows argparse."""
