"""Signals other apps listen to, so the evidence app never imports them."""

from django.dispatch import Signal

# sent by rotation after a bag moved into the archive (new: its new absolute folder) or was deleted (new: "");
# old is the absolute folder it had. Power keeps PowerAction.evidence_path (madre's out_dir) in step with it.
bag_moved = Signal()
