"""Diagrams: the data (`model`: plain dataclasses), its extraction from routines, LTM
classes and runs (`extract`), and its Graphviz DOT text (`dot`), each apart."""
