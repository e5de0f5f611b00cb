"""The early stop of the TopoWarmup trainers (``plateau_early_stop``), as a mixin over nnU-Net's training loop.

Once the plateau driver says the LR has sat at ``plateau_min_lr`` without improvement
(:meth:`~nnunetv2_topo.scheduling.plateau_driver.PlateauDriver.should_stop`, identical on every DDP rank), the next
epoch does not start: the run ends as a finished one through nnU-Net's own ``on_train_end``
(``checkpoint_final.pth``, the final validation), after the last epoch's ``on_epoch_end`` wrote its checkpoints and
diagnostics as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nnunetv2_topo.scheduling.plateau_driver import _EarlyStop

if TYPE_CHECKING:
    from nnunetv2_topo.trainers.host import TrainerHost as _Host
else:
    _Host = object

__all__ = ["EarlyStopMixin"]


class EarlyStopMixin(_Host):
    """Put before ``nnUNetTrainer`` in the bases; needs ``self.plateau_driver``."""

    def on_epoch_start(self) -> None:
        driver = self.plateau_driver
        assert driver is not None, "on_epoch_start before configure_optimizers"
        if self.current_epoch > 0 and driver.should_stop():
            self.print_to_log_file(driver.stop_message(self.current_epoch - 1), also_print_to_console=True)
            raise _EarlyStop
        super().on_epoch_start()

    def run_training(self) -> None:
        """nnU-Net's loop; an early stop ends it as a finished run."""
        try:
            super().run_training()
        except _EarlyStop:
            self.on_train_end()
