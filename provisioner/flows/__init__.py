"""The command flows: one module per command, each taking plain arguments (or a command's
loaded `Inputs`) and returning what the CLI renders, or raising `ProvisionerError`. None
prints, prompts or picks an exit code: `cli/` does, and imports the one module its command
uses (this package imports none of them).

plan, status, check, rehearse, rekey, export, apply, recover, adopt, inventory, audit, init
(`provisioner init`) and migrate (`provisioner state migrate`); `report/` keeps its own
package (its model, French sentences and HTML), `transports/trust.py` the host-key policy of
`trust`."""
