#!/usr/bin/env python3
"""An independent ISO 8583 acquirer for the bank's ISO 8583 door.

Written from docs/ISO8583.md only, with none of the bank's code: messages are encoded and
decoded by pyiso8583's ``default_ascii`` specification, PIN blocks are built here (ISO 9564
format 0) and encrypted with pycryptodome's triple DES. Every reply is checked field by field:
its message type, the request fields it must echo (byte for byte), the response code, the
authorisation id (present exactly on approvals), the balances of field 54 against the balances
this acquirer expects from the demo accounts and its own approved operations, and the mini
statement of field 48.

Usage: acquirer.py HOST:PORT ZONE_PIN_KEY_HEX  (ACQUIRER_TRACE=1 prints every message)

Prints one line per scenario; exits 1 at the first mismatch, saying what differed.
"""

import os
import socket
import string
import struct
import sys
import time
from datetime import datetime, timedelta, timezone

import iso8583
from iso8583.specs import default_ascii as SPEC
from Crypto.Cipher import DES3

# --- What docs/ISO8583.md says the bank does -------------------------------------------------

#: ACQUIRER_TRACE=1 prints every message sent and received.
TRACE = os.environ.get("ACQUIRER_TRACE") == "1"
#: Seconds to wait for any reply before declaring the bank silent.
REPLY_TIMEOUT_SECS = 20
#: The largest message body the door accepts.
MESSAGE_BYTES_MAX = 4096
#: Request fields every reply carries back unchanged, when the request has them.
ECHOED = ["2", "3", "4", "7", "11", "12", "13", "32", "33", "37", "41", "49", "90", "95", "103"]
#: What a network management reply (0810) echoes.
NETWORK_ECHOED = ["7", "11", "32", "41", "70"]
#: How long a transfer's credit may take to reach the receiving card, and how often to look.
CREDIT_DEADLINE_SECS = 30
CREDIT_POLL_SECS = 0.02
#: Movements a mini statement shows at most.
STATEMENT_SHOWN_MAX = 10
#: Wrong PINs that lock a card; this acquirer stays below it.
PIN_ATTEMPTS_MAX = 3
#: The bank's currency (ISO 4217 numeric) and another one.
CURRENCY = "978"
OTHER_CURRENCY = "840"

#: The demo accounts: card -> (PIN, opening balance).
DEMO = {"123456789": ("1234", 10_000), "987654321": ("5678", 5_000)}
JOTY, AHONA = "123456789", "987654321"
UNKNOWN_CARD = "555500001111"

ACQUIRER = "123456"
TERMINAL = "ATM00042"
BASE36 = string.digits + string.ascii_uppercase


class Mismatch(Exception):
    """A reply that is not what the documentation says."""


# --- PIN blocks (ISO 9564 format 0) ----------------------------------------------------------


def clear_pin_block(pin: str, pan: str) -> bytes:
    """The ISO-0 clear block: the PIN field XOR the PAN field. A PAN shorter than 13 digits is
    left-padded with zeros to 13 first, as the documentation says."""
    padded = pan.rjust(13, "0")
    pan_field = "0000" + padded[:-1][-12:]
    pin_field = ("0" + format(len(pin), "X") + pin).ljust(16, "F")
    return bytes(a ^ b for a, b in zip(bytes.fromhex(pin_field), bytes.fromhex(pan_field)))


def field_52(key: bytes, pin: str, pan: str) -> str:
    """Field 52: the clear block encrypted under the zone PIN key, 16 upper-case hex digits."""
    cipher = DES3.new(key, DES3.MODE_ECB)
    return cipher.encrypt(clear_pin_block(pin, pan)).hex().upper()


# --- The link ----------------------------------------------------------------------------------


class Link:
    """One TCP connection to the door, framed by a 2-byte big-endian length."""

    def __init__(self, address: str):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=REPLY_TIMEOUT_SECS)
        self.sock.settimeout(REPLY_TIMEOUT_SECS)

    def close(self):
        self.sock.close()

    def _exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            try:
                chunk = self.sock.recv(count - len(data))
            except socket.timeout:
                raise Mismatch(f"no reply within {REPLY_TIMEOUT_SECS} s") from None
            if not chunk:
                raise Mismatch("the bank closed the connection")
            data += chunk
        return data

    def send_frame(self, body: bytes) -> bytes:
        """Sends one frame and returns the body of the one that answers it."""
        if len(body) > MESSAGE_BYTES_MAX:
            raise Mismatch(f"the acquirer built a {len(body)}-byte message")
        self.sock.sendall(struct.pack(">H", len(body)) + body)
        (length,) = struct.unpack(">H", self._exactly(2))
        return self._exactly(length) if length else b""

    def exchange(self, request: dict):
        """Encodes `request` with default_ascii, sends it, and returns the request's bytes, the
        reply's bytes and the decoded reply."""
        body, _ = iso8583.encode(dict(request), SPEC)
        reply = self.send_frame(bytes(body))
        if TRACE:
            print(f"      > {bytes(body).decode('ascii')}\n      < {reply.decode('ascii', 'replace')}")
        return bytes(body), reply, decode(reply)


def decode(reply: bytes) -> dict:
    try:
        fields, _ = iso8583.decode(bytearray(reply), SPEC)
    except iso8583.DecodeError as error:
        raise Mismatch(f"the reply does not decode with default_ascii: {error}: {reply!r}")
    return fields


# --- What the acquirer expects --------------------------------------------------------------


class Account:
    """The balances and movements the acquirer expects one card to have."""

    def __init__(self, opening: int):
        self.ledger = opening
        self.held = {}  # authorisation id -> amount
        self.movements = [("OP", False, opening, opening)]

    @property
    def available(self) -> int:
        return self.ledger - sum(self.held.values())

    def balances(self):
        return (self.ledger, self.available)

    def credit(self, kind: str, amount: int):
        self.ledger += amount
        self.movements.append((kind, False, amount, self.ledger))

    def debit(self, kind: str, amount: int):
        self.ledger -= amount
        self.movements.append((kind, True, amount, self.ledger))


def parse_amounts(text: str):
    """Field 54: 20-character entries (account type, amount type 01 ledger / 02 available,
    currency, C, 12 digits). Returns (ledger, available)."""
    if len(text) % 20 != 0 or not text:
        raise Mismatch(f"field 54 is not whole 20-character entries: {text!r}")
    found = {}
    for index in range(0, len(text), 20):
        entry = text[index : index + 20]
        if entry[0:2] != "00" or entry[4:7] != CURRENCY or entry[7] != "C":
            raise Mismatch(f"field 54 entry {entry!r} is not 00, {CURRENCY}, C")
        if not entry[8:].isdigit():
            raise Mismatch(f"field 54 entry {entry!r} has no 12-digit amount")
        found[entry[2:4]] = int(entry[8:])
    if set(found) != {"01", "02"}:
        raise Mismatch(f"field 54 must give the ledger (01) and available (02) balances: {text!r}")
    return (found["01"], found["02"])


def parse_statement(text: str):
    """Field 48: a 2-digit count, then 33-character entries (YYMMDD, kind, C/D, amount on 12,
    balance after on 12)."""
    if len(text) < 2 or not text[:2].isdigit():
        raise Mismatch(f"field 48 does not start with a 2-digit count: {text!r}")
    count = int(text[:2])
    body = text[2:]
    if len(body) != count * 33:
        raise Mismatch(f"field 48 says {count} entries but holds {len(body)} characters")
    entries = []
    for index in range(count):
        entry = body[index * 33 : (index + 1) * 33]
        if not entry[:6].isdigit() or entry[8] not in "CD" or not entry[9:].isdigit():
            raise Mismatch(f"field 48 entry {entry!r} is ill-formed")
        entries.append((entry[:6], entry[6:8], entry[8] == "D", int(entry[9:21]), int(entry[21:33])))
    return entries


def response_mti(mti: str) -> str:
    return mti[:2] + str(int(mti[2]) + 1) + "0"


OPTIONAL = object()


class Acquirer:
    def __init__(self, address: str, key: bytes):
        self.address = address
        self.key = key
        self.link = Link(address)
        self.stan = 0
        now = datetime.now(timezone.utc)
        self.transmitted = now.strftime("%m%d%H%M%S")
        self.accounts = {card: Account(balance) for card, (_, balance) in DEMO.items()}

    # Building requests.

    def next_stan(self) -> str:
        self.stan += 1
        return f"{self.stan:06d}"

    def network(self, code: str, terminal=None) -> dict:
        message = {"t": "0800", "7": self.transmitted, "11": self.next_stan(), "32": ACQUIRER, "70": code}
        if terminal:
            message["41"] = terminal
        return message

    def financial(self, mti: str, processing: str, card: str, amount=None, pin=None, **extra) -> dict:
        pin = DEMO.get(card, ("0000",))[0] if pin is None else pin
        stan = self.next_stan()
        message = {
            "t": mti,
            "2": card,
            "3": processing,
            "7": self.transmitted,
            "11": stan,
            "12": self.transmitted[4:],
            "13": self.transmitted[:4],
            "32": ACQUIRER,
            "37": f"{self.transmitted[:4]}{stan}AB"[:12],
            "41": TERMINAL,
            "52": field_52(self.key, pin, card),
        }
        if amount is not None:
            message["4"] = f"{amount:012d}"
            message["49"] = CURRENCY
        message.update(extra)
        return message

    def advice(self, mti: str, card: str, amount: int, **extra) -> dict:
        message = {
            "t": mti,
            "2": card,
            "4": f"{amount:012d}",
            "7": self.transmitted,
            "11": self.next_stan(),
            "32": ACQUIRER,
            "41": TERMINAL,
            "49": CURRENCY,
        }
        message.update(extra)
        return message

    def original_data(self, original: dict) -> str:
        return original["t"] + original["11"] + original["7"] + ACQUIRER.zfill(11) + "0" * 11

    # Checking replies.

    def check(self, request: dict, reply: dict, code: str, balances=None, statement=None, card=None):
        """Checks every field of `reply` to `request`: its type, its echoes, 39 = `code`, 38
        exactly on approvals, 54 (`balances`: a (ledger, available) pair required, OPTIONAL: if
        present it must be `card`'s expected balances, None: absent), 48 exactly when
        `statement` (the expected movements) is given."""
        expected_mti = response_mti(request["t"])
        if reply.get("t") != expected_mti:
            raise Mismatch(f"message type {reply.get('t')!r}, expected {expected_mti}")
        echoed = NETWORK_ECHOED if request["t"] == "0800" else ECHOED
        allowed = {"t", "p", "1", "h", "39"}
        for number in echoed:
            if number in request:
                allowed.add(number)
                if reply.get(number) != request[number]:
                    raise Mismatch(
                        f"field {number} is {reply.get(number)!r}, the request's is {request[number]!r}"
                    )
        if reply.get("39") != code:
            raise Mismatch(f"field 39 is {reply.get('39')!r}, expected {code}")
        if request["t"] != "0800":
            approved = code == "00"
            if approved != ("38" in reply):
                raise Mismatch(f"field 38 {'missing' if approved else 'present'} with 39 = {code}")
            if approved:
                allowed.add("38")
                if len(reply["38"]) != 6 or any(c not in BASE36 for c in reply["38"]):
                    raise Mismatch(f"field 38 {reply['38']!r} is not six base-36 characters")
        if balances is OPTIONAL:
            if "54" in reply:
                allowed.add("54")
                got = parse_amounts(reply["54"])
                if got != self.accounts[card].balances():
                    raise Mismatch(f"field 54 says {got}, expected {self.accounts[card].balances()}")
        elif balances is not None:
            if "54" not in reply:
                raise Mismatch(f"field 54 missing, expected balances {balances}")
            allowed.add("54")
            got = parse_amounts(reply["54"])
            if got != balances:
                raise Mismatch(f"field 54 says (ledger, available) = {got}, expected {balances}")
        elif "54" in reply:
            raise Mismatch(f"field 54 present ({reply['54']!r}) where no balances were expected")
        if statement is not None:
            if "48" not in reply:
                raise Mismatch("field 48 (mini statement) missing")
            allowed.add("48")
            self.check_statement(parse_statement(reply["48"]), statement)
        elif "48" in reply:
            raise Mismatch(f"field 48 present: {reply['48']!r}")
        extra = set(reply) - allowed
        if extra:
            raise Mismatch(f"unexpected fields {sorted(extra, key=lambda f: (len(f), f))}")

    def check_statement(self, entries, movements):
        shown = movements[-STATEMENT_SHOWN_MAX:]
        if len(entries) != len(shown):
            raise Mismatch(f"mini statement has {len(entries)} entries, expected {len(shown)}")
        today = datetime.now(timezone.utc)
        dates = {(today - timedelta(days=days)).strftime("%y%m%d") for days in (0, 1)}
        for got, want in zip(entries, shown):
            if got[0] not in dates:
                raise Mismatch(f"mini statement entry dated {got[0]}, expected today (UTC)")
            if got[1:] != want:
                raise Mismatch(f"mini statement entry {got[1:]}, expected {want}")

    # Helpers.

    def do(self, request: dict, code: str, balances=None, statement=None, card=None):
        """Sends `request`, checks its reply, returns (request bytes, reply bytes, reply)."""
        sent, raw, reply = self.link.exchange(request)
        self.check(request, reply, code, balances, statement, card)
        return sent, raw, reply

    def inquiry(self, card: str):
        """A balance inquiry that must be approved with the expected balances."""
        request = self.financial("0200", "310000", card)
        self.do(request, "00", self.accounts[card].balances())

    def inquiry_until(self, card: str, before):
        """Balance inquiries until the card shows its expected balances: a transfer's credit
        reaches the receiving card after the sender's approval (the bank delivers it on its
        own). Until then every reply must show `before`, the balances without the credit."""
        deadline = time.monotonic() + CREDIT_DEADLINE_SECS
        expected = self.accounts[card].balances()
        while True:
            request = self.financial("0200", "310000", card)
            _, _, reply = self.link.exchange(request)
            got = parse_amounts(reply.get("54", "")) if "54" in reply else None
            if got == before and time.monotonic() < deadline:
                time.sleep(CREDIT_POLL_SECS)
                continue
            self.check(request, reply, "00", expected)
            return


def scenarios(acq: Acquirer):
    joty, ahona = acq.accounts[JOTY], acq.accounts[AHONA]

    def keep_alive():
        if acq.link.send_frame(b"") != b"":
            raise Mismatch("a keep-alive was not answered by a keep-alive")

    def echo_before_sign_on():
        acq.do(acq.network("301"), "58")

    def financial_before_sign_on():
        acq.do(acq.financial("0200", "010000", JOTY, 100), "58")
        acq.do(acq.financial("0200", "310000", JOTY), "58")

    def sign_on():
        acq.do(acq.network("001"), "00")

    def echo():
        acq.do(acq.network("301"), "00")

    def balance_inquiry():
        acq.inquiry(JOTY)
        acq.inquiry(AHONA)

    def withdrawal_approved():
        request = acq.financial("0200", "010000", JOTY, 2_500)
        joty.debit("WD", 2_500)
        acq.do(request, "00", joty.balances())

    def withdrawal_insufficient_funds():
        acq.do(acq.financial("0200", "010000", JOTY, 1_000_000), "51", joty.balances())
        acq.inquiry(JOTY)

    def wrong_pin():
        # One wrong PIN on the second card, far below the lock threshold, then a right one
        # (which clears the count).
        assert PIN_ATTEMPTS_MAX > 1
        acq.do(acq.financial("0200", "010000", AHONA, 100, pin="0000"), "55", OPTIONAL, card=AHONA)
        acq.inquiry(AHONA)

    def deposit():
        request = acq.financial("0200", "210000", JOTY, 1_000)
        joty.credit("DP", 1_000)
        acq.do(request, "00", joty.balances())

    def transfer():
        request = acq.financial("0200", "400000", JOTY, 1_500, **{"103": AHONA})
        before = ahona.balances()
        joty.debit("TO", 1_500)
        ahona.credit("TI", 1_500)
        acq.do(request, "00", joty.balances())
        acq.inquiry_until(AHONA, before)

    def mini_statement():
        # The statement's outcome carries movements, not balances: 54 may be absent; if it is
        # there it must be right.
        request = acq.financial("0200", "380000", JOTY)
        acq.do(request, "00", OPTIONAL, statement=joty.movements, card=JOTY)

    def repeat_identical():
        request = acq.financial("0200", "010000", JOTY, 700)
        joty.debit("WD", 700)
        _, first, _ = acq.do(request, "00", joty.balances())
        repeat = dict(request, t="0201")
        _, again, _ = acq.do(repeat, "00", joty.balances())
        if again != first:
            raise Mismatch(f"the 0201's reply differs from the 0200's:\n  {first!r}\n  {again!r}")
        acq.inquiry(JOTY)
        return request

    def same_key_other_amount(original):
        changed = dict(original, t="0201", **{"4": f"{900:012d}"})
        acq.do(changed, "94", OPTIONAL, card=JOTY)
        acq.inquiry(JOTY)

    def authorisation_and_completion():
        hold = acq.financial("0100", "010000", JOTY, 3_000)
        _, _, reply = acq.link.exchange(hold)
        ledger = joty.ledger
        joty.held[reply.get("38")] = 3_000
        acq.check(hold, reply, "00", (ledger, ledger - 3_000))
        completion = acq.advice("0220", JOTY, 2_000, **{"38": reply["38"]})
        del joty.held[reply["38"]]
        joty.debit("HC", 2_000)
        # An advice carries no PIN, so its reply carries no balances.
        acq.do(completion, "00", None)

        hold = acq.financial("0100", "010000", JOTY, 1_000)
        _, _, reply = acq.link.exchange(hold)
        joty.held[reply.get("38")] = 1_000
        acq.check(hold, reply, "00", joty.balances())
        void = acq.advice("0220", JOTY, 0, **{"38": reply["38"]})
        del joty.held[reply["38"]]
        acq.do(void, "00", None)
        acq.inquiry(JOTY)

    def reversals():
        # In full.
        original = acq.financial("0200", "010000", JOTY, 1_000)
        joty.debit("WD", 1_000)
        acq.do(original, "00", joty.balances())
        reversal = acq.advice("0420", JOTY, 1_000, **{"90": acq.original_data(original)})
        joty.credit("RV", 1_000)
        acq.do(reversal, "00", None)
        # In part: 500 of 2 000 dispensed, 1 500 given back.
        original = acq.financial("0200", "010000", JOTY, 2_000)
        joty.debit("WD", 2_000)
        acq.do(original, "00", joty.balances())
        partial = acq.advice(
            "0420", JOTY, 2_000, **{"90": acq.original_data(original), "95": f"{500:012d}" + "0" * 30}
        )
        joty.credit("RV", 1_500)
        _, first, _ = acq.do(partial, "00", None)
        # Repeated: the same reply, nothing moves twice.
        _, again, _ = acq.do(dict(partial, t="0421"), "00", None)
        if again != first:
            raise Mismatch(f"the 0421's reply differs from the 0420's:\n  {first!r}\n  {again!r}")
        acq.inquiry(JOTY)

    def reversal_before_original():
        original = acq.financial("0200", "010000", JOTY, 1_200)
        reversal = acq.advice("0420", JOTY, 1_200, **{"90": acq.original_data(original)})
        acq.do(reversal, "00", None)
        acq.do(original, "94", OPTIONAL, card=JOTY)
        acq.inquiry(JOTY)

    def unknown_processing_code():
        acq.do(acq.financial("0200", "990000", JOTY, 100), "12", OPTIONAL, card=JOTY)

    def missing_field():
        request = acq.financial("0200", "010000", JOTY, 100)
        del request["4"]
        acq.do(request, "30")
        acq.inquiry(JOTY)

    def currency_mismatch():
        request = acq.financial("0200", "010000", JOTY, 100, **{"49": OTHER_CURRENCY})
        acq.do(request, "13", OPTIONAL, card=JOTY)
        acq.inquiry(JOTY)

    def unknown_card():
        acq.do(acq.financial("0200", "010000", UNKNOWN_CARD, 100, pin="4321"), "14")

    def sign_off_then_financial():
        acq.do(acq.network("002"), "00")
        acq.do(acq.financial("0200", "310000", JOTY), "58")
        acq.do(acq.financial("0200", "010000", JOTY, 100), "58")
        # Signed on again, the balances are what they were.
        acq.do(acq.network("001"), "00")
        acq.inquiry(JOTY)
        acq.inquiry(AHONA)

    repeated = {}
    steps = [
        ("keep-alive", keep_alive),
        ("echo before sign-on (58)", echo_before_sign_on),
        ("financial before sign-on (58)", financial_before_sign_on),
        ("sign-on", sign_on),
        ("echo", echo),
        ("balance inquiry", balance_inquiry),
        ("withdrawal approved", withdrawal_approved),
        ("withdrawal insufficient funds (51)", withdrawal_insufficient_funds),
        ("wrong PIN (55)", wrong_pin),
        ("deposit", deposit),
        ("transfer (field 103)", transfer),
        ("mini statement (48)", mini_statement),
        ("0201 repeat, identical reply", lambda: repeated.update(original=repeat_identical())),
        ("same key, other amount (94)", lambda: same_key_other_amount(repeated["original"])),
        ("0100 then 0220 for less; 0100 voided by 0220 of 0", authorisation_and_completion),
        ("0420 full, 0420 partial (95), 0421 repeat", reversals),
        ("reversal before its original, original declined (94)", reversal_before_original),
        ("unknown processing code (12)", unknown_processing_code),
        ("missing field (30)", missing_field),
        ("currency mismatch (13)", currency_mismatch),
        ("unknown card (14)", unknown_card),
        ("sign-off then financial (58)", sign_off_then_financial),
    ]
    return steps


def main(argv):
    if len(argv) != 3:
        print("usage: acquirer.py HOST:PORT ZONE_PIN_KEY_HEX", file=sys.stderr)
        return 2
    acq = Acquirer(argv[1], bytes.fromhex(argv[2]))
    passed = 0
    steps = scenarios(acq)
    for name, step in steps:
        try:
            step()
        except Mismatch as mismatch:
            print(f"FAIL  {name}: {mismatch}")
            print(f"{passed} passed, 1 failed")
            return 1
        except (OSError, KeyError, ValueError, iso8583.EncodeError) as error:
            print(f"FAIL  {name}: {type(error).__name__}: {error}")
            print(f"{passed} passed, 1 failed")
            return 1
        print(f"ok    {name}")
        passed += 1
    acq.link.close()
    print(f"{passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
