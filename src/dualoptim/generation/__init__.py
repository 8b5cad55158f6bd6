"""Class-wise unlearning in image generation: a class-conditional DDPM, SalUn and SFRon with DualOptim.

Modules: ``model`` (DDPM + data conversion), ``train`` (cached DDPM and classifier training),
``sample`` (DDIM with classifier-free guidance), ``methods`` (SalUn, SFRon), ``metrics`` (FA,
FD-classifier, optional Inception FID), ``bench`` (Table-2/3 style benchmark), ``cli`` (``dualoptim gen``).
"""
