"""Kafka ``ssl.principal.mapping.rules``: parsing and mapping, checked against Kafka's own examples."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from eventward._internal.gateway.auth import MtlsAuthenticator, subject_dn
from eventward._internal.gateway.mapping import DEFAULT_RULES, PrincipalMapper, parse_rules, split_rules
from eventward.errors import AuthenticationError, ConfigError

from .gw_support import CN, OU, C, O, custom_cert

KAFKA_RULES = ", ".join(
    [
        r"RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L",
        r"RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L",
        r"RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U",
        r"RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U",
        "DEFAULT",
    ]
)


@pytest.mark.parametrize(
    ("dn", "principal"),
    [
        ("CN=Duke,OU=ServiceUsers,O=Org,C=US", "duke"),  # /L
        ("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US", "duke@sme"),  # two groups, /L
        ("cn=duke,ou=sme,dc=mycp,dc=com", "DUKE@SME"),  # /U
        ("cN=duke,OU=JavaSoft,O=Sun Microsystems", "DUKE"),  # first rules miss, fourth hits
        ("OU=JavaSoft,O=Sun Microsystems,C=US", "OU=JavaSoft,O=Sun Microsystems,C=US"),  # DEFAULT
    ],
)
def test_kafka_mapping_examples(dn: str, principal: str) -> None:
    assert PrincipalMapper(KAFKA_RULES).map(dn) == principal


@pytest.mark.parametrize(
    "rules",
    [
        "DEFAULT",
        r"RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
        r"RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
        r"RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
        r"RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
        r"RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
        r"RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
        r"RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
    ],
)
def test_valid_rules_parse(rules: str) -> None:
    assert parse_rules(rules)


@pytest.mark.parametrize(
    "rules",
    [
        "default",
        "DEFAUL",
        "DEFAULT/L",
        "DEFAULT/U",
        r"RULE:CN=(.*?),OU=ServiceUsers.*/$1",  # missing the final '/'
        r"rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
        r"RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
        r"RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
        r"RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
        r"RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
    ],
)
def test_invalid_rules_are_config_errors(rules: str) -> None:
    with pytest.raises(ConfigError, match="invalid principal mapping rule"):
        parse_rules(rules)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ("", []),
        ("DEFAULT", ["DEFAULT"]),
        ("RULE://,DEFAULT", ["RULE://", "DEFAULT"]),
        ("  RULE:// ,  DEFAULT  ", ["RULE://", "DEFAULT"]),
        ("  RULE:  /     /U   ,DEFAULT  ", ["RULE:  /     /U", "DEFAULT"]),
        (",,RULE://,,,DEFAULT,,", ["RULE://", "DEFAULT"]),
        # commas inside a rule belong to the rule
        (r"RULE:^CN=(.*?),OU=(.*?)$/$1,$2/,DEFAULT", [r"RULE:^CN=(.*?),OU=(.*?)$/$1,$2/", "DEFAULT"]),
        # Kafka's "rules rule" torture case
        (
            r"RULE:,RULE:,/,RULE:,\//U,RULE:,/RULE:,/,RULE:,RULE:,/L,RULE:,/L,"
            r"RULE:, DEFAULT, /DEFAULT/,DEFAULT",
            [
                r"RULE:,RULE:,/,RULE:,\//U",
                "RULE:,/RULE:,/",
                "RULE:,RULE:,/L,RULE:,/L",
                "RULE:, DEFAULT, /DEFAULT/",
                "DEFAULT",
            ],
        ),
    ],
)
def test_rule_splitting(rules: str, expected: list[str]) -> None:
    assert [r for r in split_rules(rules) if r] == expected
    assert [str(r) for r in parse_rules(rules)] == expected


def test_escaped_comma_in_cn_kafka_example() -> None:
    m = PrincipalMapper(r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT")
    assert m.map(r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz") == r"Tkac\, Adam"


def test_first_matching_rule_wins_and_no_match_is_refused() -> None:
    m = PrincipalMapper(r"RULE:^CN=([a-z]+),OU=services$/svc-$1/,RULE:^CN=([a-z]+)$/$1/U")
    assert m.map("CN=billing,OU=services") == "svc-billing"
    assert m.map("CN=alice") == "ALICE"
    with pytest.raises(AuthenticationError) as e:
        m.map("CN=alice,OU=people,O=SENTINELCORP")
    assert e.value.details["reason"] == "unmapped_subject"
    assert "SENTINELCORP" not in str(e.value)  # the DN (personal names) is never echoed


def test_replacement_semantics() -> None:
    # $n past the group count is literal; \ escapes; $0 is the whole match; $12 with one group is $1, "2"
    assert PrincipalMapper(r"RULE:^CN=(\w+)$/$1-$5/").map("CN=a") == "a-$5"
    assert PrincipalMapper(r"RULE:^CN=(\w+)$/\$1=$1/").map("CN=a") == "$1=a"
    assert PrincipalMapper(r"RULE:^CN=(\w+)$/[$0]/").map("CN=a") == "[CN=a]"
    assert PrincipalMapper(r"RULE:^CN=(\w+)$/$12/").map("CN=a") == "a2"
    # Java replaceAll: a pattern that can match empty also matches at the end
    assert PrincipalMapper(r"RULE:(.*)/<$1>/").map("CN=a") == "<CN=a><>"


@pytest.mark.parametrize(
    "rules",
    [
        r"RULE:^CN=(\w+)\1$/$1/",  # backreference: not RE2
        r"RULE:^(?=CN)(.*)$/$1/",  # lookahead: not RE2
        r"RULE:^CN=(\w+)$/$x/",  # '$' without a group number
        r"RULE:^CN=\w+$/$1/",  # group reference, no groups
        "RULE:^CN=(\\w+)$/a\\/",  # the closing '/' is escaped: not a rule at all
    ],
)
def test_unusable_rules_fail_at_startup(rules: str) -> None:
    with pytest.raises(ConfigError):
        PrincipalMapper(rules)


def test_catastrophic_pattern_runs_in_linear_time() -> None:
    # (a+)+$ backtracks exponentially in Java/Python engines; RE2 answers at once.
    m = PrincipalMapper(r"RULE:^CN=(a+)+$/$1/")
    start = time.perf_counter()
    with pytest.raises(AuthenticationError):
        m.map("CN=" + "a" * 5000 + "!")
    assert time.perf_counter() - start < 0.5


def test_empty_or_control_principal_refused() -> None:
    with pytest.raises(AuthenticationError) as e:
        PrincipalMapper(r"RULE:^CN=(.*)$/$1/").map("CN=")
    assert e.value.details["reason"] == "bad_principal"
    with pytest.raises(AuthenticationError):
        PrincipalMapper(r"RULE:^CN=(.*)$/$1/").map("CN=a\nb")


def test_rfc4514_order_matches_kafka_and_defaults_refuse_escapes(gw_pki) -> None:
    ca = gw_pki.ca
    kafka_style = custom_cert(ca, [(C, "US"), (O, "Acme"), (OU, "services"), (CN, "billing")])
    der = kafka_style.cert.public_bytes(Encoding.DER)
    assert subject_dn(der) == "CN=billing,OU=services,O=Acme,C=US"  # same order Java shows
    auth = MtlsAuthenticator(PrincipalMapper(DEFAULT_RULES))
    assert auth.authenticate(None, der).name == "billing"
    # an escaped comma smuggling "OU=services"/"CN=admin" never becomes an RDN boundary
    for subject in ([(CN, "mallory,OU=services")], [(O, "x,CN=admin"), (CN, "bob+x")], [(O, "Acme")]):
        forged = custom_cert(ca, subject).cert.public_bytes(Encoding.DER)
        with pytest.raises(AuthenticationError):
            auth.authenticate(None, forged)
    brief = PrincipalMapper(r"RULE:^CN=([a-zA-Z0-9._-]+),OU=services.*$/$1/")
    with pytest.raises(AuthenticationError):
        brief.map(subject_dn(custom_cert(ca, [(CN, "mallory,OU=services")]).cert.public_bytes(Encoding.DER)))


def test_unparseable_certificate_refused() -> None:
    auth = MtlsAuthenticator(PrincipalMapper())
    with pytest.raises(AuthenticationError) as e:
        auth.authenticate(None, b"\x30\x03garbage")
    assert e.value.details["reason"] == "bad_client_cert"
    with pytest.raises(AuthenticationError) as e:
        auth.authenticate("Bearer x", None)
    assert e.value.details["reason"] == "no_client_cert"
