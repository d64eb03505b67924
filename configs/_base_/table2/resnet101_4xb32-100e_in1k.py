# The authors' ImageNet protocol for R-101 (the paper's Table 2) without the
# normalization: the R-50 protocol with what the R-101 command changes,
# `imagenet.py -a l_resnet101 --epochs 100 --schedule 30 60 90 --gamma 0.1
# --gpu-id 0,1,2,3 --train-batch 128 --test-batch 128`. The lr stays 0.1 (not
# rescaled for the smaller batch), as in that command.
_base_ = ['./resnet50_4xb64-90e_in1k.py']

# mmpretrain's _base_/models/resnet101.py differs from resnet50.py by this
model = dict(backbone=dict(depth=101))

# 128 over 4 GPUs: 32 a GPU, for training and testing
train_dataloader = dict(batch_size=32)
val_dataloader = dict(batch_size=32)
test_dataloader = dict(batch_size=32)

param_scheduler = dict(milestones=[30, 60, 90])
train_cfg = dict(max_epochs=100)
auto_scale_lr = dict(base_batch_size=128)  # 4 GPUs x 32
