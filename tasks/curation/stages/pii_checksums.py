"""Checksum and validity rules of the identifiers the PII stage redacts, so a number that only looks like one
(a tracking number, an order id, an SSN in a range never issued) stays in the text.

Each function takes the identifier without separators and says whether it could be a real one.
"""

from __future__ import annotations

# Length of a valid IBAN per country (SWIFT IBAN registry); a country not listed has no IBAN.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
_NIF_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def luhn_valid(digits: str) -> bool:
    """Payment cards (ISO/IEC 7812)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """US Social Security numbers: area 000, 666 and 900-999, group 00 and serial 0000 are never issued."""
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country's length, then mod 97 of the rearranged number (letters as 10..35) equals 1."""
    if len(iban) != IBAN_LENGTHS.get(iban[:2], 0) or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def es_nif_valid(nif: str) -> bool:
    """Spanish DNI/NIE: 8 digits (an NIE starts X, Y or Z for 0, 1, 2) and the letter of the number mod 23."""
    number = str("XYZ".index(nif[0])) + nif[1:8] if nif[0] in "XYZ" else nif[:8]
    return number.isdigit() and _NIF_LETTERS[int(number) % 23] == nif[8]
