"""``shest run``: every stage for one slide on one machine."""
