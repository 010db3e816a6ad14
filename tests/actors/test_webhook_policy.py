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
