"""The one list of API fields the service deliberately leaves alone, each with the reason.

Keys are full protobuf field names. A request field listed here is accepted but read by nothing under
service/; a response field listed here (or a field of a message nested in a response) is never set. A
field used in both roles (Message is in requests and responses) is listed when one role leaves it alone,
and the reason says which.

tests/contract/test_fields.py keeps this honest: every request field must be read somewhere under
service/ and every response field set somewhere, unless it is listed here; an entry whose field is used
after all fails the test too (remove it when the feature lands). The field's comment in
protos/ollama/v1/ollama.proto must carry the same text as "Unused: <reason>".
"""

NOT_YET = "not implemented yet (issue: Chat, complete)"

UNUSED_FIELDS: dict[str, str] = {
    "ollama.v1.Message.images": "request-only: no response message (chat reply, show's seeded messages) "
    "carries images",
    "ollama.v1.Message.tool_name": 'request-only: clients set it on role "tool" messages',
    "ollama.v1.Message.tool_call_id": 'request-only: clients set it on role "tool" messages',
}
