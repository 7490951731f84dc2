"""The out-of-tree OpenStack Nova compute driver (extra `nova`).

Nova loads `nova.virt.` + compute_driver, so the package nova/virt/virtdriver
(installed with the project) names the driver class; the code lives here.
Select it with `compute_driver = virtdriver.VirtDriverComputeDriver` and
`[virtdriver] config_file = /etc/virt-driver/virt-driver.conf`.
"""
