"""The pager's numbers for a list shown a page at a time (the order queue's steps, the refill queue)."""
from __future__ import annotations


class PageNumbers:
    """Mixed into a page of a list that has `count` rows in all, shows page `page` (1-based), `per_page` a page."""

    count: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        """How many pages the list has (one, even when empty: "page 1 of 1")."""
        return max(1, -(-self.count // self.per_page))

    @property
    def first(self) -> int:
        """The place of this page's first row in the whole list (1-based)."""
        return (self.page - 1) * self.per_page + 1
