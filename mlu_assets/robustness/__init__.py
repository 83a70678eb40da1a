"""Group `robustness`: does what a method unlearned stay unlearned under audit and attack?
Every module of this package is loaded by `definitions.py` (load_assets_from_package_module), so
an asset added here joins the group, its jobs and `mlu robustness` without another edit."""

GROUP = "robustness"
