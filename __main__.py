"""forgestack: composition only. settings -> the chosen topology's components -> exports."""

from components import settings as stack_settings
from components.topology import ha, single

settings = stack_settings.load()  # raises ConfigError before any resource exists
# single: one EC2 host (or the local Docker engine); ha: managed AWS services across zones (README, High availability).
{"single": single.compose, "ha": ha.compose}[settings.topology](settings)
