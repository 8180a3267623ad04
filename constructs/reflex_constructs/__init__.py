"""CDK constructs of Reflex, one concern per module; `ReflexStack` composes them."""

from reflex_constructs.alarm_triggers import AlarmMatcher, AlarmTriggers, AlarmTriggersProps, CustomEventMatcher
from reflex_constructs.functions_asset import FunctionsAssetProps, LocalPipBundling, function_code
from reflex_constructs.kill_switches import KillSwitches, KillSwitchesProps
from reflex_constructs.notifications import Notifications, NotificationsProps
from reflex_constructs.promotion_permissions import (
    PROMOTER_UNSCOPED_ACTIONS,
    PromotionPermissions,
    PromotionPermissionsProps,
)
from reflex_constructs.promotion_reaction import PromoterReaction, PromoterReactionProps
from reflex_constructs.promotion_workflow import PromotionWorkflow, PromotionWorkflowProps
from reflex_constructs.reaction_function import ReactionFunction, ReactionFunctionProps, StageResources
from reflex_constructs.reaction_schedules import ReactionSchedules, ReactionSchedulesProps, ScheduleGroup, ScheduleSpec
from reflex_constructs.reflex_stack import ReflexStack, ReflexStackProps
from reflex_constructs.resharder_reaction import RESHARDER_ACTIONS, ResharderReaction, ResharderReactionProps
from reflex_constructs.scaler_permissions import UNSCOPED_ACTIONS, ScalerPermissions, ScalerPermissionsProps
from reflex_constructs.scaler_reaction import ScalerReaction, ScalerReactionProps
from reflex_constructs.tables import ReflexTables, ReflexTablesProps

__all__ = [
    "PROMOTER_UNSCOPED_ACTIONS",
    "RESHARDER_ACTIONS",
    "UNSCOPED_ACTIONS",
    "AlarmMatcher",
    "AlarmTriggers",
    "AlarmTriggersProps",
    "CustomEventMatcher",
    "FunctionsAssetProps",
    "KillSwitches",
    "KillSwitchesProps",
    "LocalPipBundling",
    "Notifications",
    "NotificationsProps",
    "PromoterReaction",
    "PromoterReactionProps",
    "PromotionPermissions",
    "PromotionPermissionsProps",
    "PromotionWorkflow",
    "PromotionWorkflowProps",
    "ReactionFunction",
    "ReactionFunctionProps",
    "ReactionSchedules",
    "ReactionSchedulesProps",
    "ReflexStack",
    "ReflexStackProps",
    "ReflexTables",
    "ReflexTablesProps",
    "ResharderReaction",
    "ResharderReactionProps",
    "ScalerPermissions",
    "ScalerPermissionsProps",
    "ScalerReaction",
    "ScalerReactionProps",
    "ScheduleGroup",
    "ScheduleSpec",
    "StageResources",
    "function_code",
]
