"""Operations: scheduled maintenance, monitoring, backup and restore, the least-privilege agent account."""
