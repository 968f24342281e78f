"""SimCLRv2 distillation with unlabeled examples."""

import keras
from keras import ops

from keras_ssl._checks import check_in_range
from keras_ssl.losses.distillation import Distillation
from keras_ssl.losses.distillation import distillation
from keras_ssl.models._compiled_call import compiled_call
from keras_ssl.models.image_utils import to_float_images
from keras_ssl.models.image_utils import unpack_batch
from keras_ssl.models.ssl_model import SSLModel


def _check_separate(teacher, student):
    """The student shares no weight with the teacher: training it would
    move the fixed teacher (or leave the shared weights frozen)."""
    if teacher is student:
        raise ValueError(
            "`teacher` and `student` must be two models: the student learns "
            "from a fixed teacher. Received: the same model "
            f"{teacher.name!r} as both"
        )
    teacher_ids = {id(v) for v in teacher.weights}
    shared = [v.path for v in student.weights if id(v) in teacher_ids]
    if shared:
        raise ValueError(
            "`student` must not share weights with `teacher`: give it its "
            f"own encoder. Received: {len(shared)} shared weights, e.g. "
            f"{shared[0]}"
        )


@keras.saving.register_keras_serializable(package="keras_ssl")
class Distiller(SSLModel):
    """Distils a fixed teacher into a student with unlabeled data.

    SimCLRv2 eq. (2): the student minimises the cross-entropy between the
    teacher's and its own temperature-softened class distributions on
    unlabeled images. When labels are given and `alpha < 1`, eq. (3) adds
    the labeled cross-entropy (`keras_ssl.losses.distillation`). Teacher
    and student see the same randomly cropped and flipped view (§3.1:
    only crop and flip are used for distillation). The student may have
    the teacher's architecture (self-distillation) or a smaller one;
    `student` is then the model to keep. `call` returns the student's logits.

    Args:
        teacher: `keras_ssl.models.FineTuner`. Not trained by the
            distiller; its own `trainable` setting is left as it is.
        student: `keras_ssl.models.FineTuner` with as many classes.
        temperature: float > 0. τ of eq. (2). Defaults to `1.0` (Table 2);
            SimCLRv2 Appendix F uses 0.1 for a fine-tuned teacher.
        alpha: float in `[0, 1]`. Weight of the distillation term in eq.
            (3); `1.0` ignores labels (eq. 2). Defaults to `1.0`.
        **kwargs: base `keras.Model` arguments.

    Example:
    ```python
    distiller = keras_ssl.models.Distiller(teacher, student)
    distiller.compile(optimizer=keras_ssl.optimizers.LARS(0.1))
    distiller.fit(unlabeled_images, epochs=1)
    ```
    """

    config_objects = ("teacher", "student")
    config_values = ("temperature", "alpha")
    metric_names = ("loss", "distill_loss", "supervised_loss", "agreement")

    def __init__(self, teacher, student, temperature=1.0, alpha=1.0, **kwargs):
        # The loss checks its own argument; eq. (3)'s `alpha` is the
        # distiller's.
        Distillation(temperature=temperature)
        check_in_range("alpha", alpha, 0, 1)
        for name, model in (("teacher", teacher), ("student", student)):
            if not hasattr(model, "classify"):
                raise ValueError(
                    f"`{name}` must be a keras_ssl.models.FineTuner (a model "
                    f"with `classify`). Received: {name}={model!r}"
                )
        if teacher.num_classes != student.num_classes:
            raise ValueError(
                "The teacher and the student must predict the same classes. "
                f"Received: teacher.num_classes={teacher.num_classes}, "
                f"student.num_classes={student.num_classes}"
            )
        _check_separate(teacher, student)
        super().__init__(**kwargs)
        # The teacher is frozen for distillation only: its variables are
        # left out of the distiller's trainable ones, and the teacher keeps
        # its own trainability (a fine-tuned teacher can train again).
        self.teacher = teacher
        self.student = student
        self.temperature = temperature
        self.alpha = alpha
        self.built = True

    def call(self, images, training=None):
        return self.student(images, training=training)

    def _frozen(self, variables, frozen):
        teacher = {id(v) for v in self.teacher.variables}
        return [v for v in variables if (id(v) in teacher) == frozen]

    @property
    def trainable_variables(self):
        return self._frozen(super().trainable_variables, False)

    @property
    def non_trainable_variables(self):
        variables = super().non_trainable_variables
        return variables + self._frozen(super().trainable_variables, True)

    @property
    def trainable_weights(self):
        return self._frozen(super().trainable_weights, False)

    @property
    def non_trainable_weights(self):
        weights = super().non_trainable_weights
        return weights + self._frozen(super().trainable_weights, True)

    @property
    def image_size(self):
        return self.student.image_size

    def serving_outputs(self, images):
        """A distiller serves its student."""
        return self.student.serving_outputs(images)

    def compute_ssl_loss(self, data, training=True):
        batch = unpack_batch(data)
        labeled = batch.labeled
        unlabeled = labeled if batch.unlabeled is None else batch.unlabeled
        images = to_float_images(unlabeled)
        n = ops.shape(images)[0]
        if labeled is not None and self.alpha < 1.0:
            images = ops.concatenate([images, to_float_images(labeled)], 0)
        views = compiled_call(self.student.augment, images, training)
        teacher_logits = self.teacher.classify(views, training=False)
        student_logits = self.student.classify(views, training=training)
        loss, logs = distillation(
            teacher_logits[:n],
            student_logits[:n],
            temperature=self.temperature,
            labels=batch.labels if labeled is not None else None,
            labeled_logits=student_logits[n:],
            alpha=self.alpha,
            return_metrics=True,
        )
        logs["agreement"] = ops.mean(
            ops.cast(
                ops.argmax(teacher_logits, -1)
                == ops.argmax(student_logits, -1),
                "float32",
            )
        )
        return loss, logs
