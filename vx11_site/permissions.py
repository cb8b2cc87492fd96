"""Who may write: every write (API, admin, CLI) needs the Django permission of what it changes, checked here
with one message, `<what> needs the permission <perm>; user '<name>' does not have it`.

A read-write API key only says its holder may write at all; the permission says what. The admin's own
add/change/delete pages use Django's model permissions already; its custom actions and views, the API's
views and the CLI's verbs call `require`.
"""

import getpass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError
from ninja.errors import HttpError


def username(user) -> str:
    return (user.get_username() if user is not None else "") or "anonymous"


class MissingPermission(HttpError, PermissionDenied):
    """The API answers it as 403 {"detail": ...} (an HttpError), the admin with its 403 page (a PermissionDenied)."""

    def __init__(self, what: str, perm: str, user):
        self.what, self.perm = what, perm
        super().__init__(403, f"{what} needs the permission {perm}; user '{username(user)}' does not have it")


# --- the fleet token's principal ------------------------------------------------------------------

FLEET_PRINCIPAL = "vx11-token"  # the user a request authenticated by the fleet token (X-VX11-Token) acts as


def fleet_principal(*grants: str):
    """The fleet token's user, made on first use with `grants` ("app.codename"): a user like any other, so its
    writes pass through `require` and an administrator may take a permission back. No password: it cannot log in."""
    from django.contrib.auth.models import Permission  # here: models modules import this one while apps load

    User = get_user_model()
    user, created = User.objects.get_or_create(**{User.USERNAME_FIELD: FLEET_PRINCIPAL})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
        for grant in grants:
            app_label, codename = grant.split(".", 1)
            user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def missing(user, *perms: str) -> str | None:
    """The first of `perms` the user lacks, or None."""
    return next((perm for perm in perms if user is None or not user.has_perm(perm)), None)


def require(user, what: str, *perms: str) -> None:
    """Refuse (MissingPermission) unless the user holds every one of `perms`; `what` names the write, e.g.
    "creating a module"."""
    perm = missing(user, *perms)
    if perm is not None:
        raise MissingPermission(what, perm, user)


# --- the CLI --------------------------------------------------------------------------------------

REFUSED = 2  # a verb refused before doing anything exits 2, as for a bad argument (1 means it ran and failed)


def add_as_argument(parser) -> None:
    parser.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        help="the portal user this command acts as and whose permissions it needs "
        "(default: VX11_CLI_USER, else your OS login name)",
    )


def cli_user(name: str | None):
    """The active portal user a CLI verb acts as: --as, else VX11_CLI_USER, else the OS login name."""
    if not name:
        name = settings.VX11_CLI_USER
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):  # no login name (a container without a passwd entry)
            raise CommandError(
                "no portal user to act as: pass --as USER or set VX11_CLI_USER", returncode=REFUSED
            ) from None
    user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: name}, is_active=True).first()
    if user is None:
        raise CommandError(
            f"no active portal user '{name}': pass --as USER (a portal user) or set VX11_CLI_USER", returncode=REFUSED
        )
    return user


def cli_require(options: dict, what: str, *perms: str):
    """The user of a CLI verb (see cli_user), refused with a one-line CommandError unless it holds `perms`."""
    user = cli_user(options.get("as_user"))
    try:
        require(user, what, *perms)
    except MissingPermission as exc:
        raise CommandError(exc.message, returncode=REFUSED) from None
    return user
