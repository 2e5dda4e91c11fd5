"""DNS checks for a sending domain: SPF, DKIM, DMARC, MX and the custom MAIL FROM domain.

Every lookup goes through one dnspython async resolver (the system's by default; tests
point it at a server of their own). A lookup that fails (timeout, SERVFAIL, no nameserver
answering) makes its check FAIL with the reason: a record we could not read is not one
we may call present or absent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.resolver
import idna
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.TXT import TXT

Status = Literal["pass", "warn", "fail"]
_RANK: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}

DEFAULT_TIMEOUT = 5.0
SES_SPF_INCLUDE = "include:amazonses.com"
SES_SPF = f"v=spf1 {SES_SPF_INCLUDE} ~all"
# Tried when neither SES DKIM tokens nor a selector are known.
COMMON_SELECTORS = ("default", "mail", "dkim", "s1", "s2", "selector1", "selector2", "google", "k1")
_MAX_DMARC_WALK = 5  # parent domains tried for an inherited DMARC record

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SELECTOR_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_SPF = re.compile(r"v=spf1(?:\s|$)", re.IGNORECASE)
_ALL = re.compile(r"([-~+?]?)all", re.IGNORECASE)
_DMARC = re.compile(r"v\s*=\s*DMARC1\s*(?:;|$)", re.IGNORECASE)


def _worse(a: Status, b: Status) -> Status:
    return a if _RANK[a] >= _RANK[b] else b


class InvalidName(ValueError):
    """A domain name or DKIM selector that is not acceptable; str() says why."""


class ResolverUnavailable(RuntimeError):
    """No DNS resolver is configured on this machine."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    found: list[str]
    message: str
    fix: str | None = None
    # Failed because DNS did not answer (timeout, SERVFAIL), not because of the records.
    lookup_failed: bool = False


@dataclass(frozen=True)
class DomainReport:
    domain: str
    checks: list[CheckResult]
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> Status:
        worst: Status = "pass"
        for check in self.checks:
            worst = _worse(worst, check.status)
        return worst

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed)."""
        return self.status != "fail"

    @property
    def only_lookups_failed(self) -> bool:
        """Every failed check failed because DNS did not answer: nothing is known to be
        wrong with the domain itself."""
        failed = [c for c in self.checks if c.status == "fail"]
        return bool(failed) and all(c.lookup_failed for c in failed)


# Names


def normalize_domain(value: str) -> str:
    """Validate a domain name and return it lowercase, IDNA-encoded, without the final dot."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidName("domain contains control characters")
    text = value.strip()
    if not text:
        raise InvalidName("domain is empty")
    if any(c.isspace() for c in text):
        raise InvalidName("domain contains spaces")
    text = text.removesuffix(".")
    try:
        ascii_name = idna.encode(text, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidName(f"not a valid domain name ({exc})") from None
    if len(ascii_name) > 253:
        raise InvalidName("domain is longer than 253 characters")
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise InvalidName("domain needs at least two labels (like example.com)")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise InvalidName(f"domain has an invalid label {label!r}")
    if labels[-1].isdigit():
        raise InvalidName("an IP address is not a domain name")
    return ascii_name


def normalize_selector(value: str) -> str:
    """A DKIM selector: one or more labels of letters, digits, '-' and '_'."""
    text = value.strip().lower()
    if (
        not text
        or len(text) > 200
        or not all(_SELECTOR_LABEL.fullmatch(p) for p in text.split("."))
    ):
        raise InvalidName(f"invalid DKIM selector {value!r}")
    return text


# Resolver


def parse_nameserver(value: str) -> tuple[str, int]:
    """'IP', 'IP:PORT', 'IPv6' or '[IPv6]:PORT' → (ip, port)."""
    text = value.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid nameserver {value!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        ipaddress.ip_address(host)
        port = int(port_text) if port_text else 53
    except ValueError:
        raise ValueError(f"invalid nameserver {value!r}: expected IP or IP:PORT") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid nameserver port in {value!r}")
    return host, port


def make_resolver(
    nameservers: Sequence[str] | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> dns.asyncresolver.Resolver:
    """A resolver asking `nameservers` ('IP[:PORT]'), or the system's (/etc/resolv.conf).

    `timeout` bounds each lookup as a whole, retries included."""
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port)
            for host, port in map(parse_nameserver, nameservers)
        ]
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration as exc:
            raise ResolverUnavailable(f"no system DNS resolver configured: {exc}") from None
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None
    return resolver


@dataclass(frozen=True)
class Lookup:
    name: str
    rdtype: str
    records: list[str]  # empty when the name or the type does not exist
    error: str | None = None  # the lookup itself failed


def _rdata_text(rdata: dns.rdata.Rdata) -> str:
    if isinstance(rdata, TXT):
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if isinstance(rdata, MX):
        return f"{rdata.preference} {rdata.exchange.to_text().lower()}"
    if isinstance(rdata, CNAME):
        return rdata.target.to_text().lower()
    return rdata.to_text()


async def lookup(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> Lookup:
    try:
        qname = dns.name.from_text(name)
        answer = await resolver.resolve(qname, rdtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return Lookup(name, rdtype, [])
    except dns.exception.Timeout:
        return Lookup(name, rdtype, [], f"DNS lookup of {rdtype} {name} timed out")
    except dns.resolver.NoNameservers:
        return Lookup(
            name, rdtype, [], f"no nameserver answered {rdtype} {name} (SERVFAIL or refused)"
        )
    except (dns.exception.DNSException, OSError) as exc:
        return Lookup(name, rdtype, [], f"DNS lookup of {rdtype} {name} failed: {exc}")
    return Lookup(name, rdtype, [_rdata_text(rdata) for rdata in answer])


def _txt(name: str, value: str) -> str:
    return f'{name} TXT "{value}"'


def _fail_lookup(check: str, what: str, error: str) -> CheckResult:
    return CheckResult(
        check, "fail", [], f"Could not read the {what}: {error}.", None, lookup_failed=True
    )


async def domain_exists(resolver: dns.asyncresolver.Resolver, domain: str) -> Lookup:
    """Whether DNS knows `domain` at all: records ["yes"] when it exists, [] when it does not
    (NXDOMAIN), error set when DNS did not answer."""
    try:
        await resolver.resolve(dns.name.from_text(domain), "SOA", search=False)
    except dns.resolver.NXDOMAIN:
        return Lookup(domain, "SOA", [])
    except dns.resolver.NoAnswer:
        return Lookup(domain, "SOA", ["yes"])
    except dns.exception.Timeout:
        return Lookup(domain, "SOA", [], f"DNS lookup of {domain} timed out")
    except dns.resolver.NoNameservers:
        return Lookup(domain, "SOA", [], f"no nameserver answered for {domain}")
    except (dns.exception.DNSException, OSError) as exc:
        return Lookup(domain, "SOA", [], f"DNS lookup of {domain} failed: {exc}")
    return Lookup(domain, "SOA", ["yes"])


# SPF


def spf_records(txts: Sequence[str]) -> list[str]:
    return [t.strip() for t in txts if _SPF.match(t.strip())]


def _has_ses_include(terms: Sequence[str]) -> bool:
    return any(t.lower().lstrip("+") == SES_SPF_INCLUDE for t in terms)


def suggest_spf(records: Sequence[str], *, ses: bool) -> str:
    """One SPF record merging `records`' mechanisms, with SES included and a soft-fail all."""
    terms: list[str] = []
    final = "~all"
    for record in records:
        for term in record.split()[1:]:
            match = _ALL.fullmatch(term)
            if match:
                final = "-all" if match.group(1) == "-" else final
            elif term.lower() not in (t.lower() for t in terms):
                terms.append(term)
    if ses and not _has_ses_include(terms):
        terms.append(SES_SPF_INCLUDE)
    if not terms and not ses:
        terms.append("mx")
    if any(t.lower().startswith("redirect=") for t in terms):
        return " ".join(["v=spf1", *terms])
    return " ".join(["v=spf1", *terms, final])


def assess_spf(
    check: str, found: Lookup, *, ses: bool, missing_ses: Status = "warn"
) -> CheckResult:
    name = found.name
    if found.error:
        return _fail_lookup(check, f"SPF record of {name}", found.error)
    records = spf_records(found.records)
    if not records:
        advice = "" if ses else " List the servers that send for you (your relay's include:)."
        return CheckResult(
            check,
            "fail",
            [],
            f"No SPF record (TXT starting 'v=spf1') on {name}.{advice}",
            _txt(name, suggest_spf([], ses=ses)),
        )
    if len(records) > 1:
        return CheckResult(
            check,
            "fail",
            records,
            f"{len(records)} SPF records on {name}: receivers treat more than one as a "
            "permanent error (RFC 7208 §4.5). Merge them into one.",
            _txt(name, suggest_spf(records, ses=ses)),
        )
    record = records[0]
    terms = record.split()[1:]
    status: Status = "pass"
    problems: list[str] = []
    if ses and not _has_ses_include(terms):
        status = missing_ses
        problems.append("it does not include amazonses.com (SES's sending servers)")
    all_terms = [m.group(1) or "+" for t in terms if (m := _ALL.fullmatch(t))]
    if all_terms and all_terms[-1] in "+?":
        status = _worse(status, "warn")
        qualifier = (
            "anyone may send as this domain" if all_terms[-1] == "+" else "it protects nothing"
        )
        problems.append(f"it ends in '{all_terms[-1]}all': {qualifier}")
    elif not all_terms and not any(t.lower().startswith("redirect=") for t in terms):
        status = _worse(status, "warn")
        problems.append("it has no 'all' mechanism, so other servers are not refused")
    if problems:
        return CheckResult(
            check,
            status,
            records,
            f"SPF record on {name} found, but {'; '.join(problems)}.",
            _txt(name, suggest_spf(records, ses=ses)),
        )
    return CheckResult(check, "pass", records, f"One valid SPF record on {name}.")


# DKIM


def dkim_tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            # Folding whitespace is allowed inside values (long p= keys are often split).
            tags.setdefault(key.strip().lower(), "".join(value.split()))
    return tags


def _is_dkim(record: str) -> bool:
    return record.strip().lower().startswith("v=dkim1") or "p" in dkim_tags(record)


def dkim_key_problem(record: str) -> str | None:
    """Why this DKIM key record cannot verify signatures, or None if it can."""
    tags = dkim_tags(record)
    if "v" in tags and tags["v"] != "DKIM1":
        return f"v={tags['v']} (must be DKIM1)"
    if "p" not in tags:
        return "it has no p= tag (the public key)"
    if not tags["p"]:
        return "the key is revoked (p= is empty)"
    try:
        base64.b64decode(tags["p"], validate=True)
    except (binascii.Error, ValueError):
        return "p= is not valid base64"
    if tags.get("k", "rsa").lower() not in {"rsa", "ed25519"}:
        return f"unknown key type k={tags['k']}"
    return None


def _dkim_fix(name: str) -> str:
    return _txt(name, "v=DKIM1; k=rsa; p=<base64 public key>")


async def check_ses_dkim(
    resolver: dns.asyncresolver.Resolver, domain: str, tokens: Sequence[str]
) -> CheckResult:
    check = "DKIM (SES)"
    lookups = await asyncio.gather(
        *(lookup(resolver, f"{token}._domainkey.{domain}", "CNAME") for token in tokens)
    )
    found: list[str] = []
    fixes: list[str] = []
    errors: list[str] = []
    for token, result in zip(tokens, lookups, strict=True):
        expected = f"{token}.dkim.amazonses.com."
        if result.error:
            errors.append(result.error)
            continue
        found.extend(f"{result.name} CNAME {target}" for target in result.records)
        if expected not in result.records:
            fixes.append(f"{result.name} CNAME {expected}")
    if errors:
        return CheckResult(
            check, "fail", found, f"Could not read: {'; '.join(errors)}.", lookup_failed=True
        )
    if fixes:
        return CheckResult(
            check,
            "fail",
            found,
            f"{len(fixes)} of {len(tokens)} SES Easy DKIM CNAME records missing or wrong: "
            "SES cannot sign as this domain until all are published.",
            "\n".join(fixes),
        )
    return CheckResult(
        check, "pass", found, f"All {len(tokens)} SES Easy DKIM CNAME records are published."
    )


def assess_dkim_selector(check: str, found: Lookup) -> CheckResult:
    name = found.name
    if found.error:
        return _fail_lookup(check, f"DKIM key at {name}", found.error)
    keys = [r for r in found.records if _is_dkim(r)]
    if not keys:
        return CheckResult(check, "fail", [], f"No DKIM key at {name}.", _dkim_fix(name))
    if len(keys) > 1:
        return CheckResult(
            check,
            "fail",
            keys,
            f"{len(keys)} DKIM records at {name}: publish exactly one.",
            _dkim_fix(name),
        )
    problem = dkim_key_problem(keys[0])
    if problem:
        return CheckResult(
            check, "fail", keys, f"DKIM key at {name} is unusable: {problem}.", _dkim_fix(name)
        )
    if "y" in dkim_tags(keys[0]).get("t", "").split(":"):
        return CheckResult(
            check,
            "warn",
            keys,
            f"DKIM key at {name} is in testing mode (t=y): receivers may ignore failures.",
            "remove t=y from the record once signatures verify",
        )
    return CheckResult(check, "pass", keys, f"DKIM key published at {name}.")


async def check_dkim_selector(
    resolver: dns.asyncresolver.Resolver, domain: str, selector: str
) -> CheckResult:
    found = await lookup(resolver, f"{selector}._domainkey.{domain}", "TXT")
    return assess_dkim_selector(f"DKIM ({selector})", found)


async def probe_dkim(resolver: dns.asyncresolver.Resolver, domain: str) -> CheckResult:
    """No selector known: look for keys at commonly used selectors."""
    check = "DKIM"
    lookups = await asyncio.gather(
        *(lookup(resolver, f"{sel}._domainkey.{domain}", "TXT") for sel in COMMON_SELECTORS)
    )
    usable = {
        sel: assess_dkim_selector(check, found)
        for sel, found in zip(COMMON_SELECTORS, lookups, strict=True)
    }
    good = [sel for sel, result in usable.items() if result.status == "pass"]
    if good:
        return CheckResult(
            check,
            "warn",
            [r for sel in good for r in usable[sel].found],
            f"No DKIM selector configured; found keys at selector(s) {', '.join(good)}. "
            "Set DKIM_SELECTOR (or pass a selector) to check the one mail is signed with.",
        )
    if all(found.error for found in lookups):
        return _fail_lookup(check, f"DKIM keys of {domain}", lookups[0].error or "")
    return CheckResult(
        check,
        "fail",
        [],
        f"No DKIM configured for {domain}: no SES identity tokens, no selector given, and no "
        "key at common selectors.",
        f"With SES: run `mailer domain setup {domain}` and publish its three CNAME records. "
        "With SMTP: set DKIM_PRIVATE_KEY and DKIM_SELECTOR and publish "
        + _dkim_fix(f"<selector>._domainkey.{domain}"),
    )


# DMARC


def dmarc_records(txts: Sequence[str]) -> list[str]:
    return [t.strip() for t in txts if _DMARC.match(t.strip())]


def _parents(domain: str) -> list[str]:
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels) - 1)][:_MAX_DMARC_WALK]


async def check_dmarc(resolver: dns.asyncresolver.Resolver, domain: str) -> CheckResult:
    check = "DMARC"
    name = f"_dmarc.{domain}"
    fix = _txt(name, f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{domain}")
    found = await lookup(resolver, name, "TXT")
    if found.error:
        return _fail_lookup(check, f"DMARC record at {name}", found.error)
    records = dmarc_records(found.records)
    inherited = False
    if not records:
        # A subdomain without its own record falls under its parent's (DMARCbis tree walk).
        for parent in _parents(domain):
            parent_found = await lookup(resolver, f"_dmarc.{parent}", "TXT")
            if dmarc_records(parent_found.records):
                found, records, inherited = parent_found, dmarc_records(parent_found.records), True
                break
    if not records:
        return CheckResult(check, "fail", [], f"No DMARC record at {name}.", fix)
    where = f"{found.name} (inherited from the parent domain)" if inherited else found.name
    if len(records) > 1:
        return CheckResult(
            check,
            "fail",
            records,
            f"{len(records)} DMARC records at {found.name}: receivers ignore DMARC when there "
            "is more than one.",
            fix,
        )
    tags = {k: v.lower() for k, v in dkim_tags(records[0]).items()}
    policy = tags.get("sp", tags.get("p")) if inherited else tags.get("p")
    no_reports = "" if "rua" in tags else " No rua= tag: you receive no aggregate reports."
    if policy == "none":
        return CheckResult(
            check,
            "warn",
            records,
            f"DMARC at {where} has p=none: it only monitors. Consider p=quarantine once the "
            f"reports show SPF/DKIM passing.{no_reports}",
            fix,
        )
    if policy in {"quarantine", "reject"}:
        return CheckResult(check, "pass", records, f"DMARC at {where}: p={policy}.{no_reports}")
    problem = "has no p= tag" if policy is None else f"has an unknown policy p={policy}"
    return CheckResult(check, "fail", records, f"DMARC record at {where} {problem}.", fix)


# MX and MAIL FROM


async def check_mx(resolver: dns.asyncresolver.Resolver, domain: str) -> CheckResult:
    check = "MX"
    found = await lookup(resolver, domain, "MX")
    if found.error:
        return _fail_lookup(check, f"MX records of {domain}", found.error)
    fix = f"{domain} MX 10 <your inbound mail server>."
    if not found.records:
        return CheckResult(
            check,
            "warn",
            [],
            f"No MX record: replies and bounces addressed to @{domain} cannot be delivered.",
            fix,
        )
    if found.records == ["0 ."]:
        return CheckResult(
            check,
            "warn",
            found.records,
            f"Null MX (RFC 7505): {domain} accepts no mail, so replies to it bounce.",
            fix,
        )
    return CheckResult(check, "pass", found.records, f"{domain} receives mail.")


async def check_mail_from_mx(
    resolver: dns.asyncresolver.Resolver, mail_from: str, region: str | None
) -> CheckResult:
    check = "MAIL FROM MX"
    found = await lookup(resolver, mail_from, "MX")
    if found.error:
        return _fail_lookup(check, f"MX records of {mail_from}", found.error)
    if region is None:
        if found.records:
            return CheckResult(check, "pass", found.records, f"{mail_from} has an MX record.")
        fix = f"{mail_from} MX 10 <your bounce-handling server>."
        return CheckResult(check, "fail", [], f"No MX record on {mail_from}.", fix)
    expected = f"feedback-smtp.{region}.amazonses.com."
    if any(record.split()[-1] == expected for record in found.records):
        return CheckResult(check, "pass", found.records, f"{mail_from} routes bounces to SES.")
    return CheckResult(
        check,
        "fail",
        found.records,
        f"{mail_from} has no MX pointing to {expected}: SES cannot use it as MAIL FROM.",
        f"{mail_from} MX 10 {expected}",
    )


# The whole report


async def check_domain(
    domain: str,
    *,
    dkim_selectors: Sequence[str] | None = None,
    ses_dkim_tokens: Sequence[str] | None = None,
    mail_from_domain: str | None = None,
    ses_region: str | None = None,
    resolver: dns.asyncresolver.Resolver | None = None,
) -> DomainReport:
    """Check `domain`'s mail authentication records; never raises for DNS problems.

    ses_region: the SES region when mail goes out through SES (SPF must then include
    amazonses.com; MAIL FROM must route to SES's feedback endpoint), None otherwise.
    Raises InvalidName for a bad domain, selector or MAIL FROM domain."""
    domain = normalize_domain(domain)
    selectors = list(dict.fromkeys(normalize_selector(s) for s in dkim_selectors or ()))
    tokens = list(dict.fromkeys(normalize_selector(t) for t in ses_dkim_tokens or ()))
    mail_from = normalize_domain(mail_from_domain) if mail_from_domain else None
    resolver = resolver or make_resolver()
    ses = ses_region is not None

    async def spf(name: str, check: str, missing_ses: Status) -> CheckResult:
        found = await lookup(resolver, name, "TXT")
        return assess_spf(check, found, ses=ses, missing_ses=missing_ses)

    jobs: list[Awaitable[CheckResult]] = [spf(domain, "SPF", "warn")]
    if tokens:
        jobs.append(check_ses_dkim(resolver, domain, tokens))
    jobs.extend(check_dkim_selector(resolver, domain, selector) for selector in selectors)
    if not tokens and not selectors:
        jobs.append(probe_dkim(resolver, domain))
    jobs.append(check_dmarc(resolver, domain))
    jobs.append(check_mx(resolver, domain))
    if mail_from:
        jobs.append(check_mail_from_mx(resolver, mail_from, ses_region))
        jobs.append(spf(mail_from, "MAIL FROM SPF", "fail"))
    return DomainReport(domain=domain, checks=list(await asyncio.gather(*jobs)))
