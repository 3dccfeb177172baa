"""Compositions: each topology's `compose(settings)` builds a whole stack from the components and exports its outputs."""
