"""The common library every API area builds on. It never imports an area."""
