"""The site above both protocols, routing, the pages, tokens."""
