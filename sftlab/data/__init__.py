"""The data flow: load → Conversation → Example → pack → collate."""
