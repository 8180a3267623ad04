"""Local simulation of Reflex: real handlers, moto standing in for AWS, a virtual clock."""
