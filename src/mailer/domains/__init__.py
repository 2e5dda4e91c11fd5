"""Sending-domain authentication: SES identity setup (`ses_identity`), SPF/DKIM/DMARC/MX
checks (`dns_check`), and `service.check_configured_domain` that combines them."""
