"""Shared test inputs: mixed lengths, languages, code and emoji."""

LONG_ENGLISH = " ".join(
    f"Sentence {i} talks about retrieval, embeddings and the quick brown fox." for i in range(20)
)  # ~300 tokens

MIXED_TEXTS = [
    "a",
    "What is the capital of China?",
    "The capital of China is Beijing.",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Embeddings 🚀🔥 make search fun 😀 — naïve café résumé",
    "  leading and trailing spaces  ",
    LONG_ENGLISH,
    "Gravity is a force that attracts two bodies towards each other.",
    "<|im_start|> special-looking text <|endoftext|> inside",
]

QUERIES = ["What is the capital of China?", "Explain gravity", "如何做红烧肉？"]
DOCUMENTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. " * 3,
    "红烧肉是一道著名的中国菜，用五花肉、酱油和糖慢慢炖成。",
    "def add(a, b):\n    return a + b",
    LONG_ENGLISH,
]
