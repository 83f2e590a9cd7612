"""Development tooling, not the product: local Twilio and SendGrid API servers, the test broker, the
demo's seed events and the synthetic roster generator. Nothing under comms/ outside this package
imports it except the CLI's `demo`, `roster generate` and `validate` (sample events) commands."""
