"""The policy pack directory (PulumiPolicy.yaml, __main__.py, requirements.txt, config/).

The code is the self-contained package `optiinfra_policies`: from the project root import
`policies.optiinfra_policies`; the CLI runs `__main__.py` here, which imports it as
`optiinfra_policies`. Nothing here imports the program.
"""
