"""The report's first screen: one French sentence per risk, for the people who open bids
(which consultation, which date, what is wrong, what to do), from `check`'s findings.

Nothing here judges anything: each sentence words a finding the monitoring probe made
(check.py), attached to its consultation as the page's markers are (model.mentions). A finding
of a code not worded here still gets a sentence: its entity and the probe's own message."""

from __future__ import annotations

import re
from dataclasses import dataclass

from provisioner import check
from provisioner.codes import Severity
from provisioner.report import fr
from provisioner.report.model import ConsultationMarker, EntityReport, GenerationView

# Where a bound copy is not known to hold its key, in check's words (plan/risks.py).
_WHERE = re.compile(r"(?:missing from|copy on) (workstation|shared location|location) ([^:]+):")
_ROLE = {"workstation": "le poste agent", "shared location": "l'emplacement partagé"}
_ROLE["location"] = _ROLE["shared location"]
# An agent's key store, in check's words (check.with_stores).
_STORE = re.compile(r'^generation (\d+) "[^"]*" (\S+) \[([^\]]*)\]')

APPLY = "lancer `provisioner apply`, qui la remet en place"


@dataclass(frozen=True)
class Risk:
    severity: Severity
    entity: str
    text: str


def _key(g: GenerationView | None, number: int, designation: str) -> str:
    name = g.designation if g is not None else designation
    return f"le bi-clé « {name} » (g{number})"


def _dates(c: ConsultationMarker) -> str:
    parts = []
    if c.deadline is not None:
        parts.append(f"date limite de remise des plis le {fr.date_time(c.deadline)}")
    if c.opening is not None:
        parts.append(f"ouverture des plis le {fr.date_time(c.opening)}")
    return f" ({'; '.join(parts)})" if parts else ""


def _consultation_sentence(
    e: EntityReport, c: ConsultationMarker, code: str, findings: list[check.Finding]
) -> str:
    g = next((g for g in e.generations if g.number == c.generation), None)
    key = _key(g, c.generation, c.designation)
    who = f"Consultation {c.reference}"
    if c.title:
        who += f" « {c.title} »"
    who += f", {e.name}{_dates(c)} : "
    expires = f"le {fr.date(g.not_after)}" if g is not None else ""
    f = findings[0]
    if code == "bound-missing":
        missing: list[str] = []
        changed: list[str] = []
        for one in findings:
            found = _WHERE.search(one.message)
            where = f"{_ROLE[found[1]]} {found[2]}" if found else "un poste agent"
            (changed if "changed since it was written" in one.message else missing).append(where)
        parts = []
        if missing:
            parts.append(f"{key} manque sur {_and(missing)}")
        if changed:
            parts.append(f"sa copie sur {_and(changed)} a changé depuis qu'elle a été écrite")
        what = " ; ".join(parts)
        todo = APPLY
    elif code == "bound-unheld":
        what, todo = f"aucun poste agent de l'entité ne détient {key}", APPLY
    elif code == "not-escrowed":
        what = f"la clé privée de {key} manque au séquestre"
        todo = "restaurer le séquestre depuis sa sauvegarde (docs/RECOVERY.md)"
    elif code in ("expires-before-deadline", "expired-accepting-bids"):
        what = (
            f"{key} expire {expires}, avant la date limite : les entreprises ne pourront plus "
            "chiffrer leurs plis pour ce certificat"
        )
        todo = (
            "prévenir la plateforme sans attendre (le bi-clé d'une consultation ne change "
            "pas : docs/RUNBOOK.md)"
        )
    elif code in ("expires-before-opening", "expired-before-opening"):
        what = f"{key} expire {expires}, avant l'ouverture des plis"
        todo = (
            "garder ce bi-clé sur les postes : sa clé privée ouvre les plis même expirée ; "
            "vérifier avec la plateforme l'ouverture d'un certificat expiré (docs/RUNBOOK.md)"
        )
    elif code == "unmanaged-key":
        what = f"elle est liée à un bi-clé que l'outil ne gère pas ({c.key_ref})"
        todo = "le prendre en charge (`provisioner adopt … --retained`) ou vérifier les postes"
    elif code == "expired-bound":
        what = f"{key} a expiré {expires}, après l'ouverture"
        todo = "le garder jusqu'à la clôture de la consultation (rien d'autre à faire)"
    else:
        what, todo = f"[{code}] {f.message}", "voir le détail de l'entité ci-dessous"
    return f"{who}{what}. À faire : {todo}."


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} et {items[-1]}"


def _entity_sentence(e: EntityReport, f: check.Finding) -> str:
    current = next((g for g in e.generations if g.status == "current"), None)
    lead = f"{e.name} ({e.id}) : "
    if f.code in ("expired", "expiring") and current is not None:
        verb = "a expiré" if f.code == "expired" else "expire"
        what = f"le bi-clé courant « {current.designation} » {verb} le {fr.date(current.not_after)}"
        todo = "lancer `provisioner apply`, qui le renouvelle (puis publier le nouveau certificat)"
    elif f.code == "escrow-missing":
        what = "une clé privée manque au séquestre et ne vit plus que dans les copies"
        todo = "lancer `provisioner apply`, qui la reprend d'une copie (docs/RECOVERY.md)"
    elif f.code in ("bound-not-in-store", "store-not-observed"):
        found = _STORE.search(f.message)
        where = f"sur le poste {found[2]}, pour l'agent {found[3]}" if found else "sur un poste"
        what = (
            f"{where}, le bi-clé g{found[1]} n'est pas dans le magasin de certificats"
            if found and f.code == "bound-not-in-store"
            else f"{where}, le magasin de certificats n'a pas été vérifié récemment"
        )
        refs = (
            f.message.split("; bound to ", 1)[1].split(":", 1)[0]
            if "; bound to " in (f.message)
            else ""
        )
        if refs:
            what += f" (consultation {refs})"
        todo = "lancer le rôle Ansible agent_stores (docs/HOWTO.md)"
    elif f.code == "unit-broken":
        what = f.message
        todo = "`provisioner recover` (docs/RECOVERY.md)"
    else:
        what, todo = f"[{f.code}] {f.message}", "voir le détail de l'entité ci-dessous"
    return f"{lead}{what}. À faire : {todo}."


def risks(entities: tuple[EntityReport, ...], general: tuple[check.Finding, ...]) -> list[Risk]:
    """Every CRITICAL finding, then every WARNING one, as sentences: per consultation and code
    where the finding names a consultation, else per entity; the findings of no entity last."""
    out: list[Risk] = []
    for severity in (check.CRITICAL, check.WARNING):
        for e in entities:
            for c in e.consultations:
                by_code: dict[str, list[check.Finding]] = {}
                for f in c.findings:
                    if f.severity == severity:
                        by_code.setdefault(f.code, []).append(f)
                for code, found in by_code.items():
                    out.append(Risk(severity, e.id, _consultation_sentence(e, c, code, found)))
            attached = {id(f) for c in e.consultations for f in c.findings}
            for f in e.findings:
                if f.severity == severity and id(f) not in attached:
                    out.append(Risk(severity, e.id, _entity_sentence(e, f)))
        for f in general:
            if f.severity == severity:
                text = (
                    f"Le plan est refusé : {f.message}. À faire : corriger le fichier en cause."
                    if f.code == "refused"
                    else f"[{f.code}] {f.message}."
                )
                out.append(Risk(severity, "", text))
    return out
