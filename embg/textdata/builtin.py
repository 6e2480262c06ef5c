"""Built-in parity texts: short queries, documents, code, many scripts, edge cases.

None are random: each exists to exercise one way an export can go wrong (prompts, byte
fallback, padding wider than the sliding window, truncation at the largest bucket).
"""

from __future__ import annotations

QUERIES = [
    "how do I reset my password",
    "best hiking trails near Zurich",
    "Как приготовить борщ?",
    "ما هي عاصمة المغرب",
    "东京的天气怎么样",
    "मौसम कैसा है",
    "python sort list of dicts by key",
    "🙂 emoji search 🚀",
]

DOCUMENTS = [
    "To reset your password, open Settings, choose Account, then tap Reset password and follow the email link.",
    "The Uetliberg ridge above Zurich offers easy trails with views over the lake and the Alps.",
    "Борщ готовят из свёклы, капусты, картофеля и мяса; подают со сметаной.",
    "الرباط هي عاصمة المملكة المغربية، وتقع على ساحل المحيط الأطلسي.",
    "东京今天多云，最高气温十八度，傍晚可能有小雨。",
    "आज मौसम साफ़ है और शाम को हल्की हवा चलेगी।",
    "sorted(rows, key=lambda row: row['age']) returns a new list ordered by the 'age' field.",
    "Emoji like 🙂 and 🚀 are encoded with byte fallback when the vocabulary lacks them.",
]

CODE = [
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 3;",
]

EDGE = ["", "   ", "\n\t", "a"]

LONG_DOCUMENT = (
    "Sentence embeddings map text to vectors so that similar meanings land close together. "
    "On a phone the model must be small, fast and still agree with the server. "
    "Quantization trades a little accuracy for a lot of size, and every trade must be measured. "
) * 4


def parity_texts() -> list[str]:
    """A mixed set used by export-time parity checks and tests."""
    return [*QUERIES, *DOCUMENTS, *CODE, *EDGE, LONG_DOCUMENT]
