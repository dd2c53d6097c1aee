"""EchoSafe's prompt wording. The paper does not publish its prompts; these are this project's, versioned so that
results can say which wording produced them. Override them per wrapper in wrappers/echosafe.yaml."""

PROMPT_VERSION = "echosafe-prompts-v1"

INSIGHTS_HEADER = "Safety insights from earlier, similar requests (they may not all apply):"

ANSWER_TEMPLATE = """{insights}Before you respond, decide whether the request below is safe given everything in the \
image and the text together. If it is unsafe, refuse and briefly explain the risk, offering safe guidance where \
you can. If it is safe, answer it helpfully and completely.

Request: {question}"""

REFLECT_TEMPLATE = """Reflect on the request and your reply above. Write one short, general safety insight that \
would help with similar requests in the future. Do not copy the user's words or your reply. Use exactly this form:
Scenario: <the type of scenario, in general terms>
Safety signals: <comma-separated cues that show risk or its absence>
Decision: <safe or unsafe>
Justification: <one sentence>"""
