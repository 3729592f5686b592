from tests.conversations.tenants import stranger, tenant

__all__ = ["stranger", "tenant"]
