"""Which URLs and addresses a webhook may reach, and how event-type patterns match."""

import pytest

import storage.webhooks as rules
from storage.webhooks import UnknownEventType, UnsafeUrl, address_problem, check_patterns, check_url, matches


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.0.1", "private"), ("fc00::1", "private"), ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("100.100.100.200", "metadata"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"),
    ("::ffff:10.0.0.1", "private"), ("::ffff:169.254.169.254", "metadata"), ("2002:7f00:1::", "loopback"),
    ("64:ff9b::a00:1", "private"), ("100.64.0.1", "non-public"), ("240.0.0.1", "address"), ("198.18.0.1", "address"),
])
def test_non_public_addresses_are_refused(address, kind):
    assert kind in address_problem(address, allow_private=False)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert address_problem(address, allow_private=False) is None


@pytest.mark.parametrize(("address", "kind"), [
    # IPv4-compatible (::/96), refused whatever they embed
    ("::127.0.0.1", "IPv4-compatible IPv6 address of 127.0.0.1, a loopback address"),
    ("::10.0.0.1", "IPv4-compatible IPv6 address of 10.0.0.1, a private address"),
    ("::a9fe:a9fe", "metadata"),
    ("::8.8.8.8", "IPv4-compatible IPv6 address (of 8.8.8.8)"),
    # IPv4-mapped (::ffff:0:0/96) and IPv4-translated (::ffff:0:0:0/96)
    ("::ffff:127.0.0.1", "IPv4-mapped IPv6 address of 127.0.0.1, a loopback address"),
    ("::ffff:8.8.8.8", "IPv4-mapped IPv6 address (of 8.8.8.8)"),
    ("::ffff:0:7f00:1", "IPv4-translated IPv6 address of 127.0.0.1, a loopback address"),
    ("::ffff:0:a9fe:a9fe", "metadata"),
    # NAT64 (64:ff9b::/96) and its local-use prefix (64:ff9b:1::/48)
    ("64:ff9b::127.0.0.1", "NAT64 address of 127.0.0.1, a loopback address"),
    ("64:ff9b::192.168.1.1", "NAT64 address of 192.168.1.1, a private address"),
    ("64:ff9b::169.254.169.254", "metadata"),
    ("64:ff9b:1::8.8.8.8", "reserved"),
    # 6to4 (2002::/16) and Teredo (2001::/32)
    ("2002:0a00:0001::1", "6to4 address of 10.0.0.1, a private address"),
    ("2002:a9fe:a9fe::", "metadata"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo address of 192.0.2.45"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "private"),
    # other reserved ranges
    ("100::1", "private"), ("2001:db8::1", "private"), ("fec0::1", "site-local"), ("::", "unspecified"),
    ("ff05::2", "multicast"), ("192.0.2.1", "private"), ("255.255.255.255", "address"), ("0.1.2.3", "private"),
])
def test_ipv6_forms_of_ipv4_and_reserved_ranges_are_refused(address, kind):
    assert kind in address_problem(address, allow_private=False)


@pytest.mark.parametrize("address", ["64:ff9b::8.8.8.8", "2002:0808:0808::1", "2a00:1450:4001:80b::200e"])
def test_translations_of_public_addresses_pass(address):
    assert address_problem(address, allow_private=False) is None


@pytest.mark.parametrize("address", ["::a9fe:a9fe", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe",
                                     "2002:a9fe:a9fe::1", "::ffff:0:a9fe:a9fe", "::ffff:100.100.100.200"])
def test_embedded_metadata_addresses_are_refused_even_when_private_ones_are_allowed(address):
    assert "metadata" in address_problem(address, allow_private=True)
    with pytest.raises(UnsafeUrl, match="webhooks may never reach it"):
        check_url(f"http://[{address}]/hook", allow_private=True)


@pytest.mark.parametrize("url", ["http://[::127.0.0.1]/", "http://[::ffff:0:7f00:1]:8080/x", "http://[::10.0.0.1]/",
                                 "https://[64:ff9b::a00:1]/", "http://[2002:7f00:1::]/"])
def test_literal_hosts_are_checked_and_the_refusal_names_the_setting(url):
    with pytest.raises(UnsafeUrl) as err:
        check_url(url, allow_private=False)
    assert err.value.code == "unsafe_url"
    assert "RESIMHUB_WEBHOOK_ALLOW_PRIVATE=1" in err.value.reason
    assert err.value.reason.startswith(rules.parse_url(url)[1])  # the host as written, not a normal form
    assert check_url(url, allow_private=True).addresses  # what the setting allows for local development


@pytest.mark.parametrize("resolved", [["::127.0.0.1"], ["::ffff:127.0.0.1"], ["93.184.216.34", "::a9fe:a9fe"],
                                      ["64:ff9b::10.0.0.1"], ["2002:c0a8:101::1"], ["::ffff:0:7f00:1"]])
def test_every_resolved_address_is_checked(monkeypatch, resolved):
    monkeypatch.setattr(rules, "resolve", lambda host, port: resolved)
    with pytest.raises(UnsafeUrl, match=r"hooks\.example\.com resolves to"):
        check_url("https://hooks.example.com/x", allow_private=False)


def test_allowing_private_addresses_still_refuses_metadata():
    assert address_problem("127.0.0.1", allow_private=True) is None
    assert address_problem("10.0.0.1", allow_private=True) is None
    assert "metadata" in address_problem("169.254.169.254", allow_private=True)


def test_one_private_address_among_public_ones_refuses_the_host(monkeypatch):
    monkeypatch.setattr(rules, "resolve", lambda host, port: ["93.184.216.34", "192.168.7.7"])
    with pytest.raises(UnsafeUrl, match="resolves to 192.168.7.7, which is a private address") as err:
        check_url("https://hooks.example.com/x", allow_private=False)
    assert err.value.code == "unsafe_url"


def test_check_url_returns_what_to_connect_to(monkeypatch):
    monkeypatch.setattr(rules, "resolve", lambda host, port: ["93.184.216.34"])
    target = check_url("https://Hooks.Example.com/path?q=1", allow_private=False)
    assert target == rules.Target("https", "hooks.example.com", 443, ("93.184.216.34",))
    assert check_url("http://[2606:4700::1]:8080/", allow_private=False).addresses == ("2606:4700::1",)


def test_patterns():
    assert check_patterns(["resimhub.evaluation.*", "*"]) == ["resimhub.evaluation.*", "*"]
    for bad in ("resimhub.evaluation", "resimhub.?raining.started", "resimhub.webhook.pinged"):
        with pytest.raises(UnknownEventType):
            check_patterns([bad])
    assert matches(["resimhub.evaluation.*"], "resimhub.evaluation.completed")
    assert not matches(["resimhub.evaluation.*"], "resimhub.experiment.created")
    assert matches(["resimhub.*.failed"], "resimhub.training.failed")
    assert matches(["*"], "resimhub.snapshot.written")
    # Pings and commands never match a pattern, not even "*".
    assert not matches(["*"], "resimhub.webhook.pinged")
    assert not matches(["*"], "resimhub.webhook.redelivery.requested")
