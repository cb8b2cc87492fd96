"""`python manage.py vx11 <verb> ...`: one command that gathers each app's verbs.

Each app ships an ordinary management command named `vx11_<verb>`; this dispatcher finds
them, so the apps never need to know each other. A verb is written with hyphens where the command's name
has underscores: `vx11 demo-db` runs `vx11_demo_db`.
"""

import sys

from django.core.management import get_commands, load_command_class
from django.core.management.base import BaseCommand, CommandError

PREFIX = "vx11_"


def verbs() -> dict[str, str]:
    """verb (hyphens for the command name's underscores) -> the app whose command it is."""
    return {
        name[len(PREFIX) :].replace("_", "-"): app for name, app in get_commands().items() if name.startswith(PREFIX)
    }


def command_name(verb: str) -> str:
    return PREFIX + verb.replace("-", "_")


class Command(BaseCommand):
    help = "VX11 portal verbs; run `vx11` for the list and `vx11 <verb> --help` for one"

    def run_from_argv(self, argv):
        available = verbs()
        if len(argv) < 3 or argv[2] in ("-h", "--help"):
            self.stdout.write("usage: manage.py vx11 <verb> [options]\n\nverbs:")
            for verb in sorted(available):
                cmd = load_command_class(available[verb], command_name(verb))
                self.stdout.write(f"  {verb:<10} {cmd.help.splitlines()[0] if cmd.help else ''}")
            return
        verb = argv[2]
        if verb not in available:
            self.stderr.write(f"error: unknown verb '{verb}'; known: {', '.join(sorted(available))}")
            sys.exit(2)
        command = load_command_class(available[verb], command_name(verb))
        command.run_from_argv([argv[0], f"vx11 {verb}", *argv[3:]])

    def handle(self, *args, **options):
        raise CommandError("call as `manage.py vx11 <verb> ...`")
