"""SES notifications through SNS: `sns` (envelopes, signatures), `ses_events` (parsing),
`service` (applying them: events, recipient states, suppressions)."""
