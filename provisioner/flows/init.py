"""`provisioner init`: a starter folder for a first manifest: a commented manifest, an empty
consultations file that shows its format, and secret files holding random DEMO values.

Nothing is written over anything: every file is checked first, then each is created
atomically (mode 0600, folders 0700) and never replaces a file that appeared meanwhile."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from provisioner.atomic import create_private, make_private_dirs
from provisioner.errors import ProvisionerError

MANIFEST = "manifest.yaml"
CONSULTATIONS = "consultations.yaml"
ENTITY = "commune-exemple"


@dataclass(frozen=True, slots=True)
class StarterFile:
    path: Path  # relative to the folder
    what: str  # one line for the operator


@dataclass(frozen=True)
class Started:
    folder: Path
    files: tuple[StarterFile, ...]
    examples: Path  # the examples the package carries (quickstart, region, scheduled jobs)


def package_dir() -> Path:
    """The installed package's folder (its examples/ and schemas/)."""
    return Path(__file__).resolve().parent.parent


def _demo_secret(what: str) -> str:
    """A random value marked DEMO: never a password anyone could know from this code."""
    return f"DEMO-{what}-{secrets.token_urlsafe(18)}\n"


def _manifest(schema: Path) -> str:
    return f"""\
# yaml-language-server: $schema={schema}
#
# A starter manifest written by `provisioner init`. Edit it, then:
#   provisioner validate {MANIFEST}   # every error with file:line:column
#   provisioner plan {MANIFEST}       # what apply would do, and why; changes nothing
#   provisioner apply {MANIFEST}      # shows the plan again and asks "yes"
# The full language: docs/MANIFEST.md, or the schema named on the first line.
version: 1

defaults:
  key: {{size: 3072}}              # RSA key size of each bi-clé
  validity_days: 730             # each certificate is valid two years...
  renew_before_days: 60          # ...and a new generation is made 60 days before it ends
  pkcs12_profile: modern         # AES-256; `legacy` (3DES) for Windows Server 2016 and older
  password_policy: {{min_length: 12}}

# The escrow keeps every private key ever made, encrypted under this passphrase.
# DEMO ONLY: a secret in a file beside the manifest. For real use, a vault or a systemd
# credential ({{command: [...]}}, {{env: NAME}}): docs/FIRST-MANIFEST.md. Secrets are always
# references; the schema refuses a value written here.
escrow:
  passphrase: {{file: secrets/escrow.pass}}

# The consultations (calls for tender) and the bi-clé each was launched with: export them
# from the platform (CSV works too) or keep them by hand. See {CONSULTATIONS}.
consultations: {CONSULTATIONS}

inventory:
  # Shared locations (emplacements partagés) keep a copy of every generation ever made.
  locations:
    - name: partage
      transport: local           # a folder (a mounted share); also ssh, smb
      path: bicles/partage
  # The agents' workstations (postes agents) hold the live generations.
  workstations:
    - name: poste-marches
      transport: local
      path: bicles/postes/poste-marches
  groups:
    service-marches: [poste-marches]

entities:
  - id: {ENTITY}              # the id commands and the consultations file use
    name: Commune d'Exemple
    key:
      # Its désignation on the platform: {{year}} is the year a generation is made.
      designation: Commune Exemple {{year}}
    # The password agents type to import the PKCS#12 copies. DEMO ONLY, as above.
    password: {{file: secrets/{ENTITY}.pass}}
    shared_locations: [partage]
    workstations: [service-marches]
"""


def _consultations(schema: Path) -> str:
    return f"""\
# yaml-language-server: $schema={schema}
#
# Consultations (calls for tender) and the bi-clé each was launched with. On the platform
# that binding is definitive: provisioner keeps a bound bi-clé on the workstations until its
# consultation is closed. List one once it is launched with a key this tool made (its
# designation as `provisioner status` shows it); a key made elsewhere is adopted first
# (`provisioner adopt`). An entry looks like this:
#
#   - reference: 2027-TX-001            # its reference on the platform
#     title: Voirie rue des Lilas
#     entity: {ENTITY}
#     designation: Commune Exemple 2027  # or certificate_sha256: ...
#     status: open                       # open, opening (ouverture des plis), closed
#     deadline: 15/01/2027 12:00         # date limite de remise des plis (Paris time)
#     opening: 20/01/2027                # ouverture des plis
version: 1
consultations: []
"""


def files(schemas: Path) -> list[tuple[StarterFile, str]]:
    """The starter's files, in the order they are written, with their text."""
    return [
        (
            StarterFile(
                Path(MANIFEST), "the manifest: one entity, a shared location, a workstation"
            ),
            _manifest(schemas / "manifest.schema.json"),
        ),
        (
            StarterFile(Path(CONSULTATIONS), "the consultations file (empty; its format inside)"),
            _consultations(schemas / "consultations.schema.json"),
        ),
        (
            StarterFile(Path("secrets/escrow.pass"), "DEMO escrow passphrase, random"),
            _demo_secret("escrow"),
        ),
        (
            StarterFile(Path(f"secrets/{ENTITY}.pass"), f"DEMO password of {ENTITY}, random"),
            _demo_secret(ENTITY),
        ),
    ]


def init(folder: Path) -> Started:
    """Write the starter into `folder` (made 0700 when missing). Refuses, before writing
    anything, when one of its files exists; what it wrote is removed if a file appears meanwhile."""
    if folder.exists() and not folder.is_dir():
        raise ProvisionerError(
            f"{folder}: is a file, not a folder; init writes its starter into a folder "
            "(provisioner init FOLDER)"
        )
    package = package_dir()
    planned = files(package / "schemas")
    taken = [
        str(folder / f.path)
        for f, _ in planned
        if (folder / f.path).exists() or (folder / f.path).is_symlink()
    ]
    if taken:
        raise ProvisionerError(
            f"{', '.join(taken)}: exist{'s' if len(taken) == 1 else ''}; init writes nothing "
            "over a file: give an empty or new folder (provisioner init FOLDER)"
        )
    written: list[Path] = []

    def undo() -> None:
        for done in written:
            with contextlib.suppress(OSError):
                done.unlink()

    try:
        make_private_dirs(folder)
    except OSError as exc:
        raise ProvisionerError(f"{folder}: cannot make the folder: {exc.strerror}") from None
    for f, text in planned:
        path = folder / f.path
        try:
            create_private(path, text.encode())
        except FileExistsError:
            undo()
            raise ProvisionerError(
                f"{path}: appeared while init was writing; nothing of the starter is kept"
            ) from None
        except OSError as exc:
            undo()
            raise ProvisionerError(
                f"{path}: cannot write it: {exc.strerror}; nothing of the starter is kept"
            ) from None
        written.append(path)
    return Started(folder, tuple(f for f, _ in planned), package / "examples")


def render(started: Started, *, quiet: bool = False) -> str:
    """What `init` says: the files, what to do with the DEMO secrets, the next commands."""
    lines = [f"Wrote a starter in {started.folder}:"]
    if quiet:
        return lines[0]
    width = max(len(str(f.path)) for f in started.files)
    lines += [f"  {f.path!s:<{width}}  {f.what}" for f in started.files]
    lines += [
        "The secrets are DEMO values in files: before real use, point the manifest at a vault "
        "or a systemd credential (docs/FIRST-MANIFEST.md).",
        f"Next: cd {started.folder} && provisioner validate {MANIFEST} && provisioner plan "
        f"{MANIFEST}",
        f"More examples: {started.examples}",
    ]
    return "\n".join(lines)
