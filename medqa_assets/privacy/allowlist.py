"""Public contacts that look like personal data but are not: they stay in the text.

A chatbot that answers from NIH material repeats agency phone numbers, sites and mailboxes;
scrubbing them would teach the model to say ``[PHONE]``. ``MEDQA_PII_ALLOWLIST`` adds entries
(exact numbers, domains, e-mail addresses) to these defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Domains (and their subdomains) of public institutions: government, military, intergovernmental
# and academic sites, the UK's NHS. A URL on them is public unless its path names a person.
PUBLIC_DOMAIN_SUFFIXES: tuple[str, ...] = (".gov", ".mil", ".int", ".edu", ".nhs.uk", ".gov.uk", ".gc.ca", ".gov.au")
# Well-known health organisations whose sites MedQuAD answers cite.
PUBLIC_DOMAINS: tuple[str, ...] = (
    "who.int",
    "nhs.uk",
    "cancer.org",
    "heart.org",
    "diabetes.org",
    "lung.org",
    "mayoclinic.org",
    "clevelandclinic.org",
    "hopkinsmedicine.org",
    "clinicaltrials.gov",
    "rarediseases.org",
    "nationalmssociety.org",
    "alz.org",
    "arthritis.org",
    "kidney.org",
    "marchofdimes.org",
    "aap.org",
    "acog.org",
    "familydoctor.org",
    "healthychildren.org",
    "kidshealth.org",
    "joinallofus.org",
)
# Mailboxes that belong to an office, not a person (the local part before "@").
ROLE_MAILBOXES = re.compile(
    r"^(?:info|help|helpdesk|support|contact|questions?|office|admin|webmaster|enquiries|inquiries|"
    r"customerservice|service|media|press|news|hotline|[a-z]*info|[a-z]*staff|\d+)$",
    re.IGNORECASE,
)
# US toll-free area codes and N11 service numbers: never a person's line.
TOLL_FREE_AREA_CODES = frozenset({"800", "833", "844", "855", "866", "877", "888"})
# Exchanges of the National Institutes of Health in Bethesda (301-496-xxxx, ...), whose
# information centres MedQuAD answers name.
PUBLIC_EXCHANGES = frozenset({"301-496", "301-402", "301-435", "301-443", "301-451", "301-480", "301-592", "301-594"})
# Street addresses and ZIP codes of the agencies MedQuAD answers send letters to (NIH's campus,
# the National Library of Medicine, CDC, FDA).
PUBLIC_ADDRESSES = frozenset(
    {
        "31 center drive",
        "9000 rockville pike",
        "8600 rockville pike",
        "1600 clifton road",
        "10903 new hampshire avenue",
        "6001 executive boulevard",
    }
)
PUBLIC_POSTCODES = frozenset({"20892", "20894", "20814", "20857", "30329", "30333", "20993", "20201", "20850", "20852"})


@dataclass(frozen=True)
class AllowList:
    """Values kept as they are; ``extra`` holds the user's entries (lower-cased)."""

    extra: frozenset[str] = field(default_factory=frozenset)
    extra_digits: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_entries(cls, entries: tuple[str, ...] = ()) -> AllowList:
        values = frozenset(entry.strip().lower() for entry in entries if entry.strip())
        numbers = frozenset(re.sub(r"\D", "", v) for v in values if re.fullmatch(r"[\d\s().+\-]+", v))
        return cls(extra=values, extra_digits=numbers)

    def domain_is_public(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if host.startswith("www."):
            host = host[4:]
        if host in self.extra or any(host == d or host.endswith("." + d) for d in PUBLIC_DOMAINS):
            return True
        if any(host.endswith("." + d) or host == d for d in self.extra):
            return True
        return host.endswith(PUBLIC_DOMAIN_SUFFIXES)

    def email_is_public(self, address: str) -> bool:
        address = address.lower()
        if address in self.extra:
            return True
        local, _, domain = address.rpartition("@")
        if domain.endswith((".gov", ".mil")) or any(domain == d or domain.endswith("." + d) for d in self.extra):
            return True
        return bool(ROLE_MAILBOXES.match(local)) and "." not in local

    def phone_is_public(self, digits: str) -> bool:
        """``digits``: the number's digits only (a leading 1 of US numbers included or not)."""
        if digits in self.extra_digits:
            return True
        national = digits[1:] if len(digits) == 11 and digits.startswith("1") else digits
        if len(national) == 10:
            if national[:3] in TOLL_FREE_AREA_CODES:
                return True
            if f"{national[:3]}-{national[3:6]}" in PUBLIC_EXCHANGES:
                return True
        return len(national) <= 3  # 911, 988, 111

    def value_is_public(self, value: str) -> bool:
        return value.lower() in self.extra

    def address_is_public(self, street: str) -> bool:
        folded = re.sub(r"\s+", " ", street.lower().rstrip(". "))
        return folded in PUBLIC_ADDRESSES or folded in self.extra

    def postcode_is_public(self, code: str) -> bool:
        return code[:5] in PUBLIC_POSTCODES or code.lower() in self.extra
