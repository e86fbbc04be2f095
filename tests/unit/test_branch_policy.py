"""The branch-URL policy's rules without I/O: IP literals read as the resolver reads them, the rule lists
(CIDRs, addresses, names, wildcards) parsed and refused with a clear message, and the submit-time verdicts."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from fastdtm.branch_policy import DEFAULT_DENY, BranchPolicy, Rules, parse_address
from fastdtm.config import Settings, SettingsError


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("169.254.169.254", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),  # one decimal number
        ("0xa9fea9fe", "169.254.169.254"),  # one hex number
        ("0251.0376.0251.0376", "169.254.169.254"),  # octal parts
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),  # the last part fills the bytes left
        ("169.16689662", "169.254.169.254"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("169.254.169.254.", "169.254.169.254"),  # one trailing dot
        ("::ffff:169.254.169.254", "::ffff:169.254.169.254"),
        ("fe80::1%25eth0", "fe80::1"),  # the zone is dropped
        ("::1", "::1"),
    ],
)
def test_ip_literals_are_read_as_the_resolver_reads_them(host: str, address: str) -> None:
    assert parse_address(host) == ip_address(address)


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "localhost",
        "256.0.0.1",  # a part over 255
        "1.2.3.4.5",
        "08.0.0.1",  # 8 is not an octal digit
        "1.2.3.256",
        "4294967296",  # 2**32
        "1..2",
        "0xg",
        "1.2.3.4..",
        "[::1]",  # brackets belong to the URL, not the host
        "::ffff:zz",
    ],
)
def test_names_and_malformed_literals_are_not_addresses(host: str) -> None:
    assert parse_address(host) is None


def test_an_ipv4_mapped_address_is_checked_as_the_ipv4_address_too() -> None:
    rules = Rules.parse("169.254.0.0/16", "--branch-deny")
    mapped = parse_address("::ffff:a9fe:a9fe")
    assert isinstance(mapped, IPv6Address)
    assert str(rules.network_of(mapped)) == "169.254.0.0/16"
    assert rules.network_of(IPv4Address("169.253.0.1")) is None


def test_rules_are_parsed_into_networks_names_and_wildcards() -> None:
    rules = Rules.parse(
        " 10.0.0.0/8, fd00::/8 ,10.1.2.3,[::1],2130706433, Metadata.Google.Internal., *.svc.local,,", "x"
    )
    assert [str(n) for n in rules.networks] == ["10.0.0.0/8", "fd00::/8", "10.1.2.3/32", "::1/128", "127.0.0.1/32"]
    assert rules.names == frozenset({"metadata.google.internal"})
    assert rules.suffixes == (".svc.local",)
    assert rules.name_rule("METADATA.google.internal.") == "metadata.google.internal"
    assert rules.name_rule("a.b.svc.local") == "*.svc.local"
    assert rules.name_rule("svc.local") is None  # a wildcard is for the names below it
    assert rules.name_rule("xsvc.local") is None
    assert Rules.parse("", "x").empty


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("10.0.0.0/33", "'10.0.0.0/33' is not a valid CIDR"),
        ("10.0.0.1/8", "has host bits set"),
        ("300.1.2.3", "'300.1.2.3' is neither a CIDR, an IP address nor a host name"),
        ("host name", "is neither a CIDR"),
        ("*.", "is neither a CIDR"),
        ("a.*.b", "is neither a CIDR"),
        ("-bad.example", "is neither a CIDR"),
    ],
)
def test_a_bad_rule_is_a_setting_error_naming_it(value: str, words: str) -> None:
    for name in ("branch_deny", "branch_allow"):
        with pytest.raises(SettingsError) as refused:
            Settings.from_env({}, **{name: value})
        assert str(refused.value).startswith(f"Setting '{name}': ") and words in str(refused.value), refused.value


def test_the_settings_default_is_the_policy_default() -> None:
    assert Settings().branch_deny == DEFAULT_DENY
    assert Settings().branch_allow == ""
    assert not Settings().branch_follow_redirects


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is in 169.254.0.0/16 on --branch-deny"),
        ("http://2852039166/", "2852039166 (169.254.169.254) is in 169.254.0.0/16 on --branch-deny"),
        ("http://0xa9fea9fe:8080/", "0xa9fea9fe (169.254.169.254) is in 169.254.0.0/16"),
        ("http://0251.0376.0251.0376/", "is in 169.254.0.0/16"),
        ("http://[::ffff:169.254.169.254]/", "is in 169.254.0.0/16"),
        ("http://user:pw@[fe80::1%25eth0]:80/", "(fe80::1) is in fe80::/10 on --branch-deny"),
        ("https://0.0.0.0/", "0.0.0.0 is in 0.0.0.0/32"),
        ("http://0/", "0 (0.0.0.0) is in 0.0.0.0/32"),
        ("http://[::]/", ":: is in ::/128"),
        ("http://x@169.254.169.254/", "169.254.169.254 is in"),
        # Full-width digits, as IDNA maps them.
        (
            "http://" + "\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14/",
            "169.254.169.254 is in",
        ),
    ],
)
def test_the_default_policy_refuses_link_local_and_unspecified_literals(url: str, refusal: str) -> None:
    verdict = BranchPolicy().url_refusal(url)
    assert verdict is not None and refusal in verdict, verdict


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8081/api/TransOut",  # loopback stays allowed by default (development)
        "http://[::1]/",
        "http://localhost/",
        "http://metadata.google.internal/",  # a name is not resolved at submit
        "http://10.0.0.1/",
        "not a url",  # format errors are check_http_url's
    ],
)
def test_the_default_policy_lets_the_rest_through(url: str) -> None:
    assert BranchPolicy().url_refusal(url) is None


def test_names_on_the_deny_list_and_loopback_denied_in_production() -> None:
    policy = BranchPolicy(f"{DEFAULT_DENY},127.0.0.0/8,::1/128,metadata.google.internal,*.internal")
    assert policy.url_refusal("http://0x7f.1/") == "0x7f.1 (127.0.0.1) is in 127.0.0.0/8 on --branch-deny"
    assert policy.url_refusal("http://[::1]:80/") == "::1 is in ::1/128 on --branch-deny"
    assert policy.url_refusal("http://Metadata.Google.Internal./") == (
        "host 'metadata.google.internal.' matches 'metadata.google.internal' on --branch-deny"
    )
    assert policy.url_refusal("http://a.b.internal/") == "host 'a.b.internal' matches '*.internal' on --branch-deny"
    assert policy.url_refusal("http://internal/") is None


def test_an_allow_list_of_names_refuses_every_other_name_at_submit() -> None:
    policy = BranchPolicy(allow="api.example.com,*.svc.cluster.local")
    assert policy.url_refusal("http://api.example.com/a") is None
    assert policy.url_refusal("http://busi.bank.svc.cluster.local:8081/a") is None
    assert policy.url_refusal("http://other.example.com/") == "host 'other.example.com' is not on --branch-allow"
    assert policy.url_refusal("http://10.1.2.3/") == "10.1.2.3 is not on --branch-allow"


def test_an_allow_list_with_cidrs_leaves_names_to_the_call() -> None:
    policy = BranchPolicy(allow="10.0.0.0/8")
    assert policy.url_refusal("http://10.1.2.3/") is None
    assert policy.url_refusal("http://11.1.2.3/") == "11.1.2.3 is not on --branch-allow"
    assert policy.url_refusal("http://busi.example/") is None  # it may resolve into 10/8: decided at call time
    # At call time: the addresses a name resolved to.
    assert policy.address_refusal("busi.example", ip_address("10.9.9.9")) is None
    assert policy.address_refusal("busi.example", ip_address("192.168.1.1")) == (
        "'busi.example' resolves to 192.168.1.1, which is not on --branch-allow"
    )


def test_deny_wins_over_allow() -> None:
    policy = BranchPolicy(allow="169.254.0.0/16,api.example.com")
    assert policy.url_refusal("http://169.254.169.254/") == "169.254.169.254 is in 169.254.0.0/16 on --branch-deny"
    assert policy.address_refusal("api.example.com", ip_address("169.254.169.254")) == (
        "'api.example.com' resolves to 169.254.169.254, which is in 169.254.0.0/16 on --branch-deny"
    )


def test_verdicts_are_cached_per_url_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fastdtm.branch_policy.MAX_CACHED", 3)
    policy = BranchPolicy()
    for i in range(10):
        policy.url_refusal(f"http://10.0.0.{i}/")
        assert len(policy._verdicts) <= 3 and len(policy._hosts) <= 3
    assert policy.url_refusal("http://169.254.0.1/") == policy.url_refusal("http://169.254.0.1/")
